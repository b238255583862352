"""One test of each kind, smallest first: the model, the kernel, the bus, a real process."""

import asyncio
import sys
import time
from pathlib import Path

import mydaemon
import pytest

from daemonstore import DaemonStoreClient, NamespaceView

MYDAEMON = ("mydaemon", 20100, 20100, 0o700)  # /etc/daemon-store/mydaemon: owner, group, mode
ALICE = "alice@example.com"
HERE = Path(__file__).resolve().parent


def wait_until(check, timeout: float = 10) -> None:
    """A daemon works on its own time: wait (bounded) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def the_store_follows_alice(world) -> None:
    view = world.daemon("mydaemon")  # the daemon's namespace, jailed as on a device
    assert not view.sees_store(ALICE)
    world.login(ALICE)  # what cryptohome does at sign-in, in-process
    assert view.sees_store(ALICE)
    view.write(ALICE, "count", b"1\n")  # into /run/daemon-store/mydaemon/<hash>/count
    world.logout(ALICE)
    assert not view.sees_store(ALICE)
    assert world.read_vault(ALICE, "mydaemon", "count") == b"1\n"  # at rest in her vault


@pytest.mark.daemonstore(daemons=[MYDAEMON])
def test_model(daemonstore_world) -> None:
    the_store_follows_alice(daemonstore_world)


@pytest.mark.daemonstore(backend="kernel", daemons=[MYDAEMON])  # root: real mounts, in a
def test_kernel(daemonstore_world) -> None:  # private mount namespace of a forked child
    the_store_follows_alice(daemonstore_world)


@pytest.mark.asyncio
@pytest.mark.daemonstore(daemons=[MYDAEMON])  # add backend="kernel" for the real kernel
async def test_bus(bus_world) -> None:
    view = bus_world.daemon("mydaemon")
    client = DaemonStoreClient("mydaemon", await bus_world.cryptohome.client(),
                               host=NamespaceView(bus_world.host, view.namespace))
    daemon = asyncio.create_task(mydaemon.serve(client))
    await bus_world.bus.login(ALICE)  # over D-Bus, as Chrome signs in
    async with asyncio.timeout(10):  # mydaemon works on its own time
        while not (view.sees_store(ALICE) and view.listdir(ALICE) == ["count"]):
            await asyncio.sleep(0.01)
    assert view.read(ALICE, "count") == b"1\n"
    daemon.cancel()
    await client.close()


@pytest.mark.daemonstore(daemons=[MYDAEMON])
def test_real_process(daemonstore_system_world) -> None:
    world = daemonstore_system_world  # a booted device in a container, / its own tmpfs
    # as the template's owner (20100), granted the session queries when it was installed
    daemon = world.spawn("mydaemon", [sys.executable, str(HERE / "mydaemon.py")])
    world.login(ALICE)  # daemonstore login: ChromeOS's calls over the system bus
    wait_until(lambda: "seen 1 time(s)" in daemon.output())
    assert world.read_vault(ALICE, "mydaemon", "count") == b"1\n"
    world.logout()  # everyone, as ChromeOS
    assert not daemon.sees_store(ALICE)
    wait_until(lambda: "session over: signed out" in daemon.output())
