"""The daemon-side client over a private bus: the store path is handed out only once the bind is
really there (the race the docs warn about: directory present, mount not yet made)."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message

from cryptohome_sim.bus import PrivateBus
from cryptohome_sim.core import Cryptohome
from cryptohome_sim.service import Service
from daemonstore import paths
from daemonstore.daemon.client import (
    DaemonStoreClient,
    NoPrimaryUser,
    PrimaryUserTracker,
    UserEvent,
)
from daemonstore.daemon.store_check import StoreNotMounted
from daemonstore.dbus import names
from daemonstore.dbus.client import Client
from daemonstore.host import NamespaceView
from daemonstore.model import ModelHost
from daemonstore.testing.bus import RunningCryptohome
from daemonstore.world import World

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio]
EVENT_TIMEOUT = 5.0


async def _event(queue: asyncio.Queue[UserEvent]) -> UserEvent:
    return await asyncio.wait_for(queue.get(), EVENT_TIMEOUT)


async def _client(world: World, svc: RunningCryptohome) -> tuple[DaemonStoreClient, str]:
    world.install_daemon("foo", 20100, 20100, 0o700)
    view = world.daemon("foo")
    client = DaemonStoreClient("foo", await svc.client(),
                               host=NamespaceView(world.host, view.namespace))
    return client, view.namespace


async def test_no_user_then_sign_in_then_sign_out(bus_world: World,
                                                  cryptohome_service: RunningCryptohome) -> None:
    client, _ = await _client(bus_world, cryptohome_service)
    with pytest.raises(NoPrimaryUser):
        await client.store()
    waiter = asyncio.create_task(client.wait_for_store(timeout=5))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await cryptohome_service.login("alice@example.com")
    store = await waiter
    user_hash = await (await cryptohome_service.client()).sanitized_username("alice@example.com")
    assert store.user_hash == user_hash
    assert store.path == paths.user_store("foo", user_hash)
    client.host.write_file(store.path + "/state", b"daemon data")  # through the daemon's view
    vault = f"{paths.vault(user_hash)}/root/foo/state"
    assert bus_world.host.read_file(vault) == b"daemon data"
    await cryptohome_service.logout()
    await client.wait_for_sign_out(user_hash, timeout=5)
    with pytest.raises((NoPrimaryUser, StoreNotMounted)):
        await client.store()


async def test_directory_without_bind_is_never_reported_ready(
        bus_world: World, cryptohome_service: RunningCryptohome) -> None:
    client, _ = await _client(bus_world, cryptohome_service)
    await cryptohome_service.login("alice@example.com")
    user_hash = (await client.store()).user_hash
    target = paths.user_store("foo", user_hash)
    # the daemon's own view loses the bind (a local umount in its namespace) while the target
    # directory stays: the state of a daemon whose bind has not arrived yet
    client.host.umount(target)
    assert client.host.exists(target)
    with pytest.raises(StoreNotMounted) as info:
        await client.store()
    assert "nothing is mounted" in str(info.value)
    with pytest.raises(TimeoutError):
        await client.wait_for_store(timeout=0.3)
    await client.close()


async def test_tracker_follows_biods_pattern(cryptohome_service: RunningCryptohome) -> None:
    """biod's SessionStateManager: the primary user on ``started`` (the first one, not the
    second to join), forgotten on ``stopped``."""
    svc = cryptohome_service
    tracker = PrimaryUserTracker(await svc.client())
    async with tracker.events() as events:
        alice = await svc.login("alice@example.com")
        assert await _event(events) == UserEvent("logged_in", "alice@example.com",
                                                 alice.user_hash)
        await svc.login("bob@example.com")  # a second profile: the primary stays alice
        await svc.logout()
        assert await _event(events) == UserEvent("logged_out", "alice@example.com",
                                                 alice.user_hash, "stopped")
        assert tracker.primary is None
        assert events.empty()


async def test_tracker_recovers_mid_session_and_treats_a_lost_name_as_logout(
        cryptohome_service: RunningCryptohome) -> None:
    svc = cryptohome_service
    alice = await svc.login("alice@example.com")  # before the daemon starts
    tracker = PrimaryUserTracker(await svc.client())
    async with tracker.events() as events:
        assert await _event(events) == UserEvent("logged_in", "alice@example.com",
                                                 alice.user_hash)
        await svc.service.stop()  # session_manager (and cryptohome) leave the bus
        assert await _event(events) == UserEvent("logged_out", "alice@example.com",
                                                 alice.user_hash, "session manager gone")


async def test_signals_follow_the_owner_across_a_restart(private_bus: PrivateBus) -> None:
    """A daemon subscribed before session_manager came up, and after it restarted, still
    hears the rightful owner's SessionStateChanged (the sender is followed through
    NameOwnerChanged; a signal from anyone else is never believed)."""
    core = Cryptohome(ModelHost())
    listener = await Client.connect(private_bus.address)
    impostor = await Client.connect(private_bus.address)
    try:
        async with listener.session_states() as states:
            for _ in range(2):  # first start, then a restart with a new unique name
                service = await Service.start(core, private_bus.address)
                try:
                    await impostor._bus.send(Message.new_signal(  # noqa: SLF001 - a forger
                        names.SESSION_PATH, names.SESSION_IFACE, names.SESSION_SIGNAL, "s",
                        ["started"]))
                    async with await Client.connect(private_bus.address) as chrome:
                        await chrome.login("alice@example.com")
                        await chrome.logout()
                    got = [await asyncio.wait_for(states.get(), EVENT_TIMEOUT)
                           for _ in range(3)]
                    assert got == ["started", "stopping", "stopped"]
                finally:
                    await service.stop()
            assert states.empty()  # the forged signals never arrived
    finally:
        await impostor.close()
        await listener.close()
