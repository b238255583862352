"""The daemon client's waits over a private bus, on the model world: no timeout unless asked,
a cancel is never swallowed (the 3.11 ``wait_for`` hang), nothing is polled while nothing
happens, ``sessions()`` yields each mounted store and ends it, and the guest policy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from dbus_fast import Message

from cryptohome_sim.bus import PrivateBus
from daemonstore import paths
from daemonstore.daemon.client import DaemonStoreClient, NoPrimaryUser, PrimaryStore
from daemonstore.daemon.wakeups import Wakeups
from daemonstore.dbus import names
from daemonstore.dbus.client import BusUnavailable
from daemonstore.host import NamespaceView
from daemonstore.paths import BadName
from daemonstore.testing.bus import RunningCryptohome
from daemonstore.world import World

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio]
#: a guard, never a speed goal: a regression fails here instead of hanging the suite
GUARD = 5.0
ALICE = "alice@example.com"
T = TypeVar("T")


async def guarded(aw: Awaitable[T]) -> T:
    async with asyncio.timeout(GUARD):
        return await aw


class CountingView(NamespaceView):
    """The daemon's view, counting its mountinfo reads (a poll would read it again and again)."""

    reads = 0

    def mountinfo(self, namespace: str | None = None) -> str:
        self.reads += 1
        return super().mountinfo(namespace)


async def _client(world: World, svc: RunningCryptohome, **kwargs: Any) -> DaemonStoreClient:
    world.install_daemon("foo", 20100, 20100, 0o700)
    view = world.daemon("foo")
    return DaemonStoreClient("foo", await svc.client(),
                             host=CountingView(world.host, view.namespace), **kwargs)


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set each time a client's wait parks on its wake-up event (subscribed, looked, idle)."""
    event = asyncio.Event()
    original = Wakeups.wait

    async def wait(self: Wakeups) -> None:
        event.set()
        await original(self)

    monkeypatch.setattr(Wakeups, "wait", wait)
    return event


def _calls(svc: RunningCryptohome, method: str) -> int:
    return sum(1 for call in svc.core.calls() if call.method == method)


async def test_no_timeout_by_default_and_none_is_accepted(
        bus_world: World, cryptohome_service: RunningCryptohome, parked: asyncio.Event) -> None:
    client = await _client(bus_world, cryptohome_service)
    waiter = asyncio.create_task(client.wait_for_store(timeout=None))
    await guarded(parked.wait())
    alice = await cryptohome_service.login(ALICE)
    store = await guarded(waiter)
    assert store == PrimaryStore(ALICE, alice.user_hash, paths.user_store("foo", alice.user_hash))
    waiter = asyncio.create_task(client.wait_for_sign_out(alice.user_hash))  # default: none
    await cryptohome_service.logout()
    await guarded(waiter)
    assert not client.status(alice.user_hash).mounted


async def test_a_timeout_says_what_did_not_happen(
        bus_world: World, cryptohome_service: RunningCryptohome) -> None:
    client = await _client(bus_world, cryptohome_service)
    with pytest.raises(TimeoutError, match="no mounted foo store after 0.2s"):
        await client.wait_for_store(timeout=0.2)
    alice = await cryptohome_service.login(ALICE)
    with pytest.raises(TimeoutError, match="still mounted"):
        await client.wait_for_sign_out(alice.user_hash, timeout=0.2)


async def test_a_cancel_that_meets_a_signal_propagates(
        bus_world: World, cryptohome_service: RunningCryptohome, parked: asyncio.Event) -> None:
    """Regression (issue 16): on 3.11, ``asyncio.wait_for`` returned the signal and dropped the
    cancel when both came in the same loop iteration, and a suite hung 10 minutes. Here the
    session manager emits ``SessionStateChanged`` while the waiter is parked, and the waiter is
    cancelled from the message handler itself (0 hops: the very callback that delivers the
    signal) or 1-4 ``call_soon`` hops later: at 1 the wake-up event is already set and the waiter
    scheduled when the cancel comes (exactly the meeting), at 2-4 it is inside the D-Bus call
    the signal caused. Every time the waiter must end cancelled, at once."""
    svc = cryptohome_service
    client = await _client(bus_world, svc)
    raw = client.bus._bus  # noqa: SLF001 - the test listens on the same connection
    loop = asyncio.get_running_loop()
    for hops in range(5):
        parked.clear()
        waiter = asyncio.create_task(client.wait_for_store())
        await guarded(parked.wait())  # subscribed, nobody signed in: parked on its event

        on_message = _cancel_on_signal(loop, waiter, hops)
        raw.add_message_handler(on_message)  # after the client's own handler: runs after it
        try:
            svc.service.session_manager.SessionStateChanged(names.STARTED)
            done, _ = await asyncio.wait({waiter}, timeout=GUARD)
        finally:
            raw.remove_message_handler(on_message)
            waiter.cancel()
        assert waiter in done, f"the cancel {hops} hops after the signal was swallowed"
        assert waiter.cancelled()


def _cancel_on_signal(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any],
                      hops: int) -> Callable[[Message], None]:
    """A message handler that cancels ``task`` ``hops`` loop callbacks after the signal."""

    def cancel_after(n: int) -> None:
        if n:
            loop.call_soon(cancel_after, n - 1)
        else:
            task.cancel()

    def on_message(msg: Message) -> None:
        if msg.member == names.SESSION_SIGNAL:
            cancel_after(hops)

    return on_message


async def test_nothing_is_polled_while_nothing_happens(
        bus_world: World, cryptohome_service: RunningCryptohome, parked: asyncio.Event) -> None:
    svc = cryptohome_service
    client = await _client(bus_world, svc)
    view = client.host
    assert isinstance(view, CountingView)
    waiter = asyncio.create_task(client.wait_for_store())
    await guarded(parked.wait())
    asked, reads = _calls(svc, "RetrievePrimarySession"), view.reads
    assert asked == 1
    await asyncio.sleep(0.3)  # six of the old 50 ms rechecks
    assert (_calls(svc, "RetrievePrimarySession"), view.reads) == (asked, reads)
    await svc.login(ALICE)
    await guarded(waiter)


async def test_sessions_yields_each_store_and_ends_it(
        bus_world: World, cryptohome_service: RunningCryptohome) -> None:
    svc = cryptohome_service
    client = await _client(bus_world, svc)
    host = client.host
    assert host is not None
    async with contextlib.aclosing(client.sessions()) as sessions:
        following = asyncio.create_task(anext(sessions))
        alice = await svc.login(ALICE)
        first = await guarded(following)
        assert (first.username, first.user_hash, first.guest, first.over) == (
            ALICE, alice.user_hash, False, False)
        assert first.path == paths.user_store("foo", alice.user_hash)
        host.write_file(first.path + "/state", b"daemon data")
        assert bus_world.host.read_file(
            f"{paths.vault(alice.user_hash)}/root/foo/state") == b"daemon data"

        # the bind leaves this view alone (no signal at all): only the mount watch can tell
        host.umount(first.path)
        reason = await guarded(first.ended())
        assert reason.startswith("the store is no longer mounted here")
        assert first.over

        following = asyncio.create_task(anext(sessions))
        await svc.logout()
        bob = await svc.login("bob@example.com")
        second = await guarded(following)
        assert (second.username, second.user_hash) == ("bob@example.com", bob.user_hash)

        following = asyncio.create_task(anext(sessions))
        await svc.logout()
        assert await guarded(second.ended()) in {
            "signed out", "the store is no longer mounted here: "
            + client.status(bob.user_hash).reason}
        assert not following.done()
        following.cancel()
        await asyncio.wait({following})


async def test_a_session_manager_that_leaves_ends_the_session(
        bus_world: World, cryptohome_service: RunningCryptohome) -> None:
    svc = cryptohome_service
    client = await _client(bus_world, svc)
    await svc.login(ALICE)
    async with contextlib.aclosing(client.sessions()) as sessions:
        session = await guarded(anext(sessions))
        await svc.service.stop()  # NameOwnerChanged to "": counts as a sign-out (biod)
        assert await guarded(session.ended()) == "signed out"


async def test_a_lost_connection_ends_the_waits(
        bus_world: World, cryptohome_service: RunningCryptohome, parked: asyncio.Event) -> None:
    """Nothing would ever wake a waiter whose connection is gone: it says so instead."""
    client = await _client(bus_world, cryptohome_service)
    waiter = asyncio.create_task(client.wait_for_store())
    await guarded(parked.wait())
    client.bus._bus.disconnect()  # noqa: SLF001 - the connection breaks under the daemon
    with pytest.raises(BusUnavailable, match="lost while waiting"):
        await guarded(waiter)
    with pytest.raises(BusUnavailable):
        async with contextlib.aclosing(client.sessions()) as sessions:
            await guarded(anext(sessions))


async def test_a_guest_is_not_served_by_default(
        bus_world: World, cryptohome_service: RunningCryptohome) -> None:
    """RetrievePrimarySession never names the guest (the first non-incognito user): the guest's
    store is bound in the daemon's view, yet the client hands it out to nobody."""
    client = await _client(bus_world, cryptohome_service)
    guest = await cryptohome_service.login(paths.GUEST_USER, guest=True)
    assert client.status(guest.user_hash).mounted
    with pytest.raises(NoPrimaryUser):
        await client.store()
    with pytest.raises(TimeoutError):
        await client.wait_for_store(timeout=0.2)


async def test_serve_guests_hands_out_the_guests_store(
        bus_world: World, cryptohome_service: RunningCryptohome) -> None:
    svc = cryptohome_service
    client = await _client(bus_world, svc, serve_guests=True)
    with pytest.raises(NoPrimaryUser, match="not even a guest"):
        await client.store()
    waiter = asyncio.create_task(client.wait_for_store())
    guest = await svc.login(paths.GUEST_USER, guest=True)
    store = await guarded(waiter)
    assert store == PrimaryStore(paths.GUEST_USER, guest.user_hash,
                                 paths.user_store("foo", guest.user_hash), guest=True)
    await svc.logout()
    await guarded(client.wait_for_sign_out(guest.user_hash))
    alice = await svc.login(ALICE)  # a regular user is served as ever
    assert (await client.store()).user_hash == alice.user_hash


async def test_connect_finds_the_system_bus_and_checks_the_name_first(
        bus_world: World, private_bus: PrivateBus, cryptohome_service: RunningCryptohome,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadName):
        await DaemonStoreClient.connect("../etc")
    # the private_bus fixture points $DBUS_SYSTEM_BUS_ADDRESS at the private bus
    async with await DaemonStoreClient.connect("foo") as client:
        assert client.bus.address == private_bus.address
        assert await client.primary_user() is None
