"""What a daemon uses: its store path for the primary user, "is it really mounted", and an
asynchronous wait for sign-in (design.md ``client.py``).

The pattern is biod's ``SessionStateManager`` (chromeos-facts.md §4): at start ask
``RetrievePrimarySession`` (a daemon restarted mid-session recovers), then follow
``SessionStateChanged``: on ``started`` look the primary user up again, on ``stopped`` forget it.
The improvement over the original helpers (libbrillo ``GetDaemonStorePath``, libchromeos-rs
``get_daemonstore_path``) is that a path is only ever handed out once the user's vault is really
bound there (:mod:`daemonstore.daemon.store_check`): the target directory exists before the bind and
after sign-out, and a daemon that writes there writes into tmpfs (facts §7 item 1).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from daemonstore import paths
from daemonstore.daemon.store_check import StoreNotMounted, StoreStatus, store_status
from daemonstore.dbus import names
from daemonstore.dbus.client import Client
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host

#: how often the mount is re-checked while waiting: ``started`` is emitted after the mount, but
#: a daemon must not rely on that order (facts §4: the order is UNCONFIRMED from Chrome's source)
RECHECK_SECONDS = 0.05


@dataclass(frozen=True)
class PrimaryStore:
    username: str
    user_hash: str
    path: str


class NoPrimaryUser(DaemonStoreError, LookupError):
    """Nobody is signed in (``RetrievePrimarySession`` returned empty strings)."""


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
