"""What a daemon uses: its store path for the primary user, "is it really mounted", and an
asynchronous wait for sign-in (docs/architecture.md §6).

The pattern is biod's ``SessionStateManager`` (docs/chromeos.md §4.3), in
:class:`PrimaryUserTracker`: at start ask ``RetrievePrimarySession`` (a daemon restarted
mid-session recovers), then follow ``SessionStateChanged``: on ``started`` look the primary user
up if none is known, on ``stopped`` forget it; the session manager losing its name
(``NameOwnerChanged`` to "") counts as a sign-out.
The improvement over the original helpers (libbrillo ``GetDaemonStorePath``, libchromeos-rs
``get_daemonstore_path``) is that a path is only ever handed out once the user's vault is really
bound there (:mod:`daemonstore.daemon.store_check`): the target directory exists before the bind and
after sign-out, and a daemon that writes there writes into tmpfs (docs/chromeos.md §7 item 1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from daemonstore import paths
from daemonstore.daemon.store_check import StoreNotMounted, StoreStatus, store_status
from daemonstore.dbus import names
from daemonstore.dbus.client import Client
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host

#: how often the mount is re-checked while waiting: ``started`` is emitted after the mount, but
#: a daemon must not rely on that order (docs/chromeos.md §4.1: the order is unconfirmed)
RECHECK_SECONDS = 0.05


@dataclass(frozen=True)
class PrimaryStore:
    username: str
    user_hash: str
    path: str


class NoPrimaryUser(DaemonStoreError, LookupError):
    """Nobody is signed in (``RetrievePrimarySession`` returned empty strings)."""


@dataclass(frozen=True)
class UserEvent:
    """``logged_in`` (``username``, ``user_hash`` set) or ``logged_out`` (the user forgotten;
    ``reason`` is ``stopped`` or ``session manager gone``)."""

    kind: str
    username: str = ""
    user_hash: str = ""
    reason: str = ""


class PrimaryUserTracker:
    """biod's ``SessionStateManager``: who the primary user is, kept current from signals.

    ``async with tracker.events() as queue``: first a ``logged_in`` if someone is signed in
    already, then one event per change. ``primary`` is the current ``(username, hash)`` or
    None.
    """

    def __init__(self, bus: Client) -> None:
        self.bus = bus
        self.primary: tuple[str, str] | None = None

    async def refresh(self) -> UserEvent | None:
        """``RefreshPrimaryUser``: ask ``RetrievePrimarySession``; an event if it changed."""
        username, user_hash = await self.bus.primary_session()
        if not user_hash:
            return self._forget("stopped")
        found = (username, paths.check_hash(user_hash))
        if found == self.primary:
            return None
        self.primary = found
        return UserEvent("logged_in", *found)

    def _forget(self, reason: str) -> UserEvent | None:
        if self.primary is None:
            return None
        username, user_hash = self.primary
        self.primary = None
        return UserEvent("logged_out", username, user_hash, reason)

    @asynccontextmanager
    async def events(self) -> AsyncIterator[asyncio.Queue[UserEvent]]:
        out: asyncio.Queue[UserEvent] = asyncio.Queue()
        async with self.bus.name_owner_changes(names.SESSION_NAME) as owners, \
                self.bus.session_states() as states:
            if (first := await self.refresh()) is not None:
                out.put_nowait(first)

            async def pump() -> None:
                while True:
                    get_state = asyncio.ensure_future(states.get())
                    get_owner = asyncio.ensure_future(owners.get())
                    done, pending = await asyncio.wait(
                        [get_state, get_owner], return_when=asyncio.FIRST_COMPLETED)
                    for task in pending:
                        task.cancel()
                    event = None
                    if get_owner in done and not get_owner.result():
                        event = self._forget("session manager gone")
                    elif get_state in done:
                        state = get_state.result()
                        if state == names.STARTED and self.primary is None:
                            event = await self.refresh()
                        elif state == names.STOPPED:
                            event = self._forget(names.STOPPED)
                    if event is not None:
                        out.put_nowait(event)

            task = asyncio.ensure_future(pump())
            try:
                yield out
            finally:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                    pass


class DaemonStoreClient:
    """One daemon's view: ``host`` is the Host of the namespace the daemon runs in."""

    def __init__(self, daemon: str, host: Host, bus: Client, *, cache: bool = False) -> None:
        self.daemon = paths.check_daemon_name(daemon)
        self.host = host
        self.bus = bus
        self.cache = cache

    @classmethod
    async def connect(cls, daemon: str, host: Host, address: str, *,
                      cache: bool = False) -> DaemonStoreClient:
        return cls(daemon, host, await Client.connect(address), cache=cache)

    async def close(self) -> None:
        await self.bus.close()

    async def primary_user(self) -> tuple[str, str] | None:
        """``(username, hash)`` of the primary session, or None when nobody is signed in."""
        username, user_hash = await self.bus.primary_session()
        if not user_hash:
            return None
        return username, paths.check_hash(user_hash)

    def status(self, user_hash: str) -> StoreStatus:
        return store_status(self.host, self.daemon, user_hash, cache=self.cache)

    async def store(self) -> PrimaryStore:
        """The primary user's store, only if it is really mounted (else StoreNotMounted)."""
        primary = await self.primary_user()
        if primary is None:
            raise NoPrimaryUser("nobody is signed in")
        status = self.status(primary[1])
        if not status.mounted:
            raise StoreNotMounted(status)
        return PrimaryStore(primary[0], primary[1], status.path)

    async def wait_for_store(self, timeout: float = 10.0) -> PrimaryStore:
        """Wait until a primary user is signed in *and* their store is bound here.

        Subscribes before the first look, so a ``started`` between the look and the
        subscription cannot be missed; re-checks the mount while a session exists, because the
        signal says a session started, not that this daemon's bind already arrived.
        """
        deadline = time.monotonic() + timeout
        async with self.bus.session_states() as states:
            while True:
                try:
                    return await self.store()
                except (NoPrimaryUser, StoreNotMounted):
                    pass
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no mounted {self.daemon} store after {timeout:.1f}s")
                try:
                    state = await asyncio.wait_for(states.get(), min(left, RECHECK_SECONDS))
                except TimeoutError:
                    continue
                if state == names.STOPPED:
                    continue  # the user went away; keep waiting for the next one

    async def wait_for_sign_out(self, user_hash: str, timeout: float = 10.0) -> None:
        """Wait until this daemon no longer sees ``user_hash``'s store (after ``stopping``)."""
        deadline = time.monotonic() + timeout
        while self.status(user_hash).mounted:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.daemon} store of {user_hash} still mounted")
            await asyncio.sleep(RECHECK_SECONDS)
