"""What a daemon uses: its store path for the signed-in user, "is it really mounted", and
asynchronous waits for sign-in and sign-out, on a real system or in a test world.

A daemon on a real system needs no Host and no root: the client talks to the session manager on
the system bus and checks the mount with plain paths, ``statx``'s mount id and its own
``/proc/self/mountinfo`` (:func:`~daemonstore.daemon.store_check.store_status_here`)::

    import asyncio
    from daemonstore import DaemonStoreClient

    async def main() -> None:
        # the system bus: $DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket
        async with await DaemonStoreClient.connect("biod") as client:
            async for session in client.sessions():
                # session.path is /run/daemon-store/biod/<hash>, the user's vault really is
                # bound there in this process's namespace
                worker = asyncio.create_task(serve(session.path, session.user_hash))
                reason = await session.ended()  # sign-out, or the bind went away here
                worker.cancel()

    asyncio.run(main())

A test world passes the daemon's namespace as ``host=`` (``DaemonStoreClient("biod", bus,
host=NamespaceView(world.host, view.namespace))``); everything else is the same.

**Who is served.** The pattern is biod's ``SessionStateManager`` (docs/chromeos.md §4.3, kept in
:class:`PrimaryUserTracker`): the user is the one ``RetrievePrimarySession`` names, asked at start
(a daemon restarted mid-session recovers) and again on each ``SessionStateChanged`` or change of
the session manager's owner (one that left the bus counts as a sign-out). A path is only ever
handed out once that user's vault is really bound there (:mod:`daemonstore.daemon.store_check`):
the target directory exists before the bind and after sign-out, and a daemon that writes there
writes into tmpfs (docs/chromeos.md §7 item 1). The improvement over libbrillo's
``GetDaemonStorePath`` and libchromeos-rs's ``get_daemonstore_path``, which build the path and
check nothing.

**Guests.** ``RetrievePrimarySession`` names "the first non-incognito user" (docs/chromeos.md §4.3;
the session manager and ``cryptohome_sim`` alike), so during a guest session it returns two empty
strings and, by default, a daemon gets nothing: :meth:`DaemonStoreClient.store` raises
:class:`NoPrimaryUser`, :meth:`~DaemonStoreClient.wait_for_store` and
:meth:`~DaemonStoreClient.sessions` keep waiting. That is ChromeOS's own behaviour for daemons
built on ``SessionStateManager`` (biod keeps no fingerprints for a guest), and it is the safe
default: the guest's store *is* bound (cryptohome binds every daemon's store for the guest's
ephemeral vault, inside ``mnt_chrome``, and the binds propagate to the daemons), but what is
written there lives in RAM and vanishes at sign-out. A daemon that wants to work for guests too (a
cache, per-session state) passes ``serve_guests=True``: when there is no primary user, the client
looks for ``$guest`` in ``RetrieveActiveSessions`` and hands out the guest's store, with
``guest=True`` on the :class:`PrimaryStore` / :class:`StoreSession`.

**Waiting.** Nothing polls: a wait wakes on the session manager's signals and on changes of the
mount table this process sees (daemon/wakeups.py; ``POLLPRI`` on ``/proc/self/mountinfo`` on a real
system, ``Host.watch_mounts`` in a world), because ``started`` says a session started, not that
this daemon's bind has arrived (docs/chromeos.md §4.1: the order is unconfirmed). There is no
timeout unless one is given (``asyncio.timeout``), and a cancel always propagates: Python 3.11's
``asyncio.wait_for`` swallowed a cancel that met a ``SessionStateChanged`` (issue 16), so it is
used nowhere on this path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from daemonstore import paths
from daemonstore.daemon.store_check import (
    StoreNotMounted,
    StoreStatus,
    store_status,
    store_status_here,
)
from daemonstore.daemon.wakeups import Wakeups, stop_task, wakeups
from daemonstore.dbus import names
from daemonstore.dbus.client import CallError, Client, system_bus_address
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host

#: the errors a call to a session manager that is not on the bus gives: nobody is signed in
_NO_SERVICE = (names.SERVICE_UNKNOWN, "org.freedesktop.DBus.Error.NameHasNoOwner")


@dataclass(frozen=True)
class PrimaryStore:
    """The signed-in user's store, mounted when handed out. ``guest``: the guest's (only with
    ``serve_guests``; its data lives in RAM and goes at sign-out)."""

    username: str
    user_hash: str
    path: str
    guest: bool = False


class NoPrimaryUser(DaemonStoreError, LookupError):
    """Nobody is signed in (``RetrievePrimarySession`` returned empty strings), or only a guest
    and the client does not serve guests."""


@dataclass(frozen=True)
class UserEvent:
    """``logged_in`` (``username``, ``user_hash`` set) or ``logged_out`` (the user forgotten;
    ``reason`` is ``stopped`` or ``session manager gone``)."""

    kind: str
    username: str = ""
    user_hash: str = ""
    reason: str = ""


@dataclass(eq=False)
class StoreSession:
    """One stretch of time during which a user's store is mounted for this daemon, as
    :meth:`DaemonStoreClient.sessions` yields it. ``await session.ended()`` returns (with the
    reason) once it is over: the user signed out, another user became primary, or the bind is
    gone from this process's view; ``over`` says whether it is."""

    username: str
    user_hash: str
    path: str
    guest: bool = False
    _over: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _reason: str = field(default="", repr=False)

    @property
    def over(self) -> bool:
        return self._over.is_set()

    async def ended(self) -> str:
        """Wait until the session is over; returns why."""
        await self._over.wait()
        return self._reason

    def _end(self, reason: str) -> None:
        if not self._over.is_set():
            self._reason = reason
            self._over.set()


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
                await stop_task(task)  # never swallows a cancel of ours


@dataclass(frozen=True)
class _User:
    username: str
    user_hash: str
    guest: bool


class DaemonStoreClient:
    """One daemon's view of its store.

    ``host``: the Host of the namespace the daemon runs in (a test world); None (the default):
    this process, with plain paths (a real daemon). ``root`` (Host-less only, tests only): the
    directory standing for ``/`` in the paths the client checks and hands out, e.g. a kernel
    sandbox's root, whose stores are not at ``/run/...``. ``cache``: the
    ``/run/daemon-store-cache`` store instead. ``serve_guests``: hand out a guest's store too
    (module docstring, "Guests").
    """

    def __init__(self, daemon: str, bus: Client, *, host: Host | None = None,
                 cache: bool = False, serve_guests: bool = False, root: str = "/") -> None:
        self.daemon = paths.check_daemon_name(daemon)
        self.bus = bus
        self.host = host
        self.cache = cache
        self.serve_guests = serve_guests
        if host is not None and root != "/":
            raise ValueError("root is for a client without a host (a Host's paths are "
                             "already its sandbox's)")
        self.root = root

    @classmethod
    async def connect(cls, daemon: str, address: str | None = None, *,
                      host: Host | None = None, cache: bool = False,
                      serve_guests: bool = False, root: str = "/") -> DaemonStoreClient:
        """Connect to ``address``, by default the system bus (``$DBUS_SYSTEM_BUS_ADDRESS``, else
        ``/run/dbus/system_bus_socket``)."""
        paths.check_daemon_name(daemon)  # before connecting: a bad name is bad input
        bus = await Client.connect(system_bus_address(address))
        return cls(daemon, bus, host=host, cache=cache, serve_guests=serve_guests, root=root)

    async def close(self) -> None:
        await self.bus.close()

    async def __aenter__(self) -> DaemonStoreClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- one look -----------------------------------------------------------------------------
    async def primary_user(self) -> tuple[str, str] | None:
        """``(username, hash)`` of the primary session, or None when nobody is signed in."""
        username, user_hash = await self.bus.primary_session()
        if not user_hash:
            return None
        return username, paths.check_hash(user_hash)

    async def _user(self) -> _User | None:
        """Whom this client serves now: the primary user, else (``serve_guests``) the guest;
        None when nobody, or when no session manager is on the bus."""
        try:
            primary = await self.primary_user()
            if primary is not None:
                return _User(*primary, guest=False)
            if self.serve_guests:
                guest_hash = (await self.bus.active_sessions()).get(paths.GUEST_USER)
                if guest_hash:
                    return _User(paths.GUEST_USER, paths.check_hash(guest_hash), guest=True)
        except CallError as exc:
            if exc.error_name not in _NO_SERVICE:
                raise
        return None

    def status(self, user_hash: str) -> StoreStatus:
        """Is ``user_hash``'s store mounted in this daemon's view (and where is it)?"""
        if self.host is not None:
            return store_status(self.host, self.daemon, user_hash, cache=self.cache)
        return store_status_here(self.daemon, user_hash, cache=self.cache, root=self.root)

    def _watch(self, notify: Callable[[], None]) -> Callable[[], None]:
        if self.host is not None:
            return self.host.watch_mounts(notify)
        from daemonstore.kernel.local import watch_mount_table  # Host-less only

        return watch_mount_table(notify)

    def _wakeups(self, *, bus: bool = True) -> AbstractAsyncContextManager[Wakeups]:
        return wakeups(self.bus if bus else None, self._watch)

    async def store(self) -> PrimaryStore:
        """The user's store, only if it is really mounted (else StoreNotMounted); NoPrimaryUser
        when nobody (or only a guest, unless ``serve_guests``) is signed in."""
        user = await self._user()
        if user is None:
            raise NoPrimaryUser("nobody is signed in" if not self.serve_guests
                                else "nobody is signed in, not even a guest")
        return self._mounted(user)

    def _mounted(self, user: _User) -> PrimaryStore:
        status = self.status(user.user_hash)
        if not status.mounted:
            raise StoreNotMounted(status)
        return PrimaryStore(user.username, user.user_hash, status.path, user.guest)

    # ---- waits --------------------------------------------------------------------------------
    async def wait_for_store(self, timeout: float | None = None) -> PrimaryStore:
        """Wait until a user is signed in *and* their store is bound here; no timeout unless
        given (then TimeoutError). Subscribes before the first look, so a ``started`` between
        the look and the subscription cannot be missed; looks again on every signal and every
        mount change, because the signal says a session started, not that this daemon's bind
        already arrived."""
        async with _deadline(timeout, f"no mounted {self.daemon} store"), \
                self._wakeups() as wake:
            user: _User | None = None
            while True:
                if wake.begin():
                    user = await self._user()
                if user is not None:
                    try:
                        return self._mounted(user)
                    except StoreNotMounted:
                        pass
                await wake.wait()

    async def wait_for_sign_out(self, user_hash: str, timeout: float | None = None) -> None:
        """Wait until this daemon no longer sees ``user_hash``'s store (after ``stopping``); no
        timeout unless given. Wakes on mount changes only."""
        async with _deadline(timeout, f"{self.daemon} store of {user_hash} still mounted"), \
                self._wakeups(bus=False) as wake:
            while True:
                wake.begin()
                if not self.status(user_hash).mounted:
                    return
                await wake.wait()

    async def sessions(self) -> AsyncIterator[StoreSession]:
        """``async for session in client.sessions()``: each time a user's store becomes
        available here, a :class:`StoreSession`; it ends (``await session.ended()``) when the
        user signs out, another user becomes the one served, or the bind goes from this view.
        The next one is yielded only after the previous one ended, and only if it is not over
        already. Runs until the loop is left (``break``; ``contextlib.aclosing`` to close at
        once) or the bus fails (raised here: ``BusUnavailable`` when the connection goes)."""
        found: asyncio.Queue[StoreSession | BaseException] = asyncio.Queue()
        follower = asyncio.create_task(self._follow(found))
        try:
            while True:
                item = await found.get()
                if isinstance(item, BaseException):
                    raise item
                if not item.over:  # one that came and went while the daemon was busy: skipped
                    yield item
        finally:
            await stop_task(follower)

    async def _follow(self, found: asyncio.Queue[StoreSession | BaseException]) -> None:
        """The task behind :meth:`sessions`: ends sessions even while the daemon is not
        iterating (it awaits ``ended()``)."""
        current: StoreSession | None = None
        try:
            async with self._wakeups() as wake:
                user: _User | None = None
                while True:
                    if wake.begin():
                        user = await self._user()
                    status = self.status(user.user_hash) if user is not None else None
                    if current is not None:
                        reason = _still(current, user, status)
                        if reason:
                            current._end(reason)
                            current = None
                    if current is None and user is not None and status is not None \
                            and status.mounted:
                        current = StoreSession(user.username, user.user_hash, status.path,
                                               user.guest)
                        found.put_nowait(current)
                    await wake.wait()
        except Exception as exc:  # noqa: BLE001 - handed to the iterating daemon
            found.put_nowait(exc)
        finally:
            if current is not None:
                current._end("the client stopped")


def _still(session: StoreSession, user: _User | None, status: StoreStatus | None) -> str:
    """Why ``session`` is over ("" while it is not)."""
    if user is None:
        return "signed out"
    if user.user_hash != session.user_hash:
        return "another user is signed in"
    if status is None or not status.mounted:
        return f"the store is no longer mounted here: {status.reason if status else ''}"
    return ""


@asynccontextmanager
async def _deadline(timeout: float | None, what: str) -> AsyncIterator[None]:
    """``asyncio.timeout(timeout)`` (None: none), whose expiry is a TimeoutError saying
    ``what``. A cancel from outside always propagates (asyncio.timeout tells its own cancel
    from another's; 3.11's wait_for did not)."""
    try:
        async with asyncio.timeout(timeout) as scope:
            yield
    except TimeoutError:
        if scope.expired():
            raise TimeoutError(f"{what} after {timeout:.1f}s") from None
        raise
