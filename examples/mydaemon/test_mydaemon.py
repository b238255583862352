"""mydaemon's own suite: sign-in, sign-out, two users, restart, guest and late start, each on the
model and the kernel (mydaemon.serve() in this process, in its jail's namespace) and on the
system world (mydaemon.py a real process at the real paths, as its own user). Plus the classic
bug: naive.sh loses a count into tmpfs where mydaemon, in the same steps, keeps everything in
the vault (as root too, where only its client stops it)."""

import asyncio
import logging
import sys
import time
from pathlib import Path

import mydaemon
import pytest

from daemonstore import DaemonStoreClient, NamespaceView
from daemonstore.testing.system import require_system_world, system_world

MYDAEMON = ("mydaemon", 20100, 20100, 0o700)  # /etc/daemon-store/mydaemon: owner, group, mode
ALICE, BOB, GUEST = "alice@example.com", "bob@example.com", "$guest"
HERE = Path(__file__).resolve().parent
MYDAEMON_ARGV = [sys.executable, str(HERE / "mydaemon.py")]
NAIVE_ARGV = ["/bin/sh", str(HERE / "naive.sh")]


async def until(check, what: str, timeout: float = 10) -> None:
    """The daemon works on its own time: wait (bounded) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def number(read) -> int | None:
    """The count a file holds; None while there is none (or while it is being written)."""
    try:
        data = read()
    except FileNotFoundError:
        return None
    return int(data) if data.strip() else None


# ---- starting the daemon on each kind of world ---------------------------------------------


class InProcess:
    """A bus_world (model or kernel): mydaemon.serve() runs as a task of this event loop, its
    client seeing the world from the namespace of the daemon's jail."""

    alice, bob = ALICE, BOB

    def __init__(self, world) -> None:
        self.world = world
        self.started: list[InProcessDaemon] = []

    async def start(self) -> "InProcessDaemon":
        jail = self.world.daemon("mydaemon")  # a new namespace each start, as on a device
        client = DaemonStoreClient("mydaemon", await self.world.cryptohome.client(),
                                   host=NamespaceView(self.world.host, jail.namespace))
        self.started.append(InProcessDaemon(jail, client))
        return self.started[-1]

    async def login(self, user: str) -> None:
        await self.world.bus.login(user, guest=user == GUEST)

    async def logout(self) -> None:  # everyone at once, as ChromeOS
        await self.world.bus.logout()

    def vault_count(self, user: str) -> int | None:
        return number(lambda: self.world.read_vault(user, "mydaemon", "count"))

    def left_behind(self, user: str) -> list[str]:
        """What the device has at /run/daemon-store/mydaemon/<hash> (nothing bound there)."""
        path = f"/run/daemon-store/mydaemon/{self.world.hash_of(user)}"
        with self.world.in_namespace(self.world.namespace):
            return self.world.host.listdir(path) if self.world.host.exists(path) else []

    async def close(self) -> None:
        for daemon in self.started:
            await daemon.stop()


class InProcessDaemon:
    def __init__(self, jail, client: DaemonStoreClient) -> None:
        self.jail, self.client = jail, client
        self.log: list[str] = []  # what it logs, as its real process prints it
        self.handler = logging.Handler(logging.INFO)
        self.handler.emit = lambda r: self.log.append(f"{r.name}: {r.getMessage()}")
        mydaemon.log.addHandler(self.handler)
        mydaemon.log.setLevel(logging.INFO)
        self.task = asyncio.create_task(mydaemon.serve(client))

    def count(self, user: str) -> int | None:
        return number(lambda: self.jail.read(user, "count"))

    def sees_store(self, user: str) -> bool:
        return self.jail.sees_store(user)

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            await self.client.close()
        mydaemon.log.removeHandler(self.handler)


class RealProcess:
    """The system world: the daemon is a real process, spawned through daemonstore jail. The
    device is the module's: each test signs in accounts of its own (vaults outlive a test).
    The daemon runs as its own user (the template's owner, 20100), which the world granted
    the session queries when it installed mydaemon; ``uid=0`` runs it as root instead."""

    def __init__(self, world, test: str, uid=None) -> None:
        self.world, self.uid = world, uid
        self.alice, self.bob = f"alice.{test}@example.com", f"bob.{test}@example.com"
        self.started: list[SpawnedDaemon] = []

    async def start(self, argv=MYDAEMON_ARGV) -> "SpawnedDaemon":
        process = self.world.spawn("mydaemon", argv, uid=self.uid, gid=self.uid)
        self.started.append(SpawnedDaemon(self.world, process))
        return self.started[-1]

    async def login(self, user: str) -> None:
        self.world.login_guest() if user == GUEST else self.world.login(user)

    async def logout(self) -> None:
        self.world.logout()

    def vault_count(self, user: str) -> int | None:
        return number(lambda: self.world.read_vault(user, "mydaemon", "count"))

    def left_behind(self, user: str) -> list[str]:
        path = f"/run/daemon-store/mydaemon/{self.world.hash_of(user)}"
        return self.world.run("ls", "-A", path)["stdout"].split()

    async def close(self) -> None:
        for daemon in self.started:
            await daemon.stop()
        if self.world.signed_in():
            self.world.logout()


class SpawnedDaemon:
    def __init__(self, world, process) -> None:
        self.world, self.process = world, process

    @property
    def log(self) -> list[str]:
        return self.process.output().splitlines()

    def count(self, user: str) -> int | None:
        path = f"/run/daemon-store/mydaemon/{self.world.hash_of(user)}/count"
        return number(lambda: self.process.read(path))

    def sees_store(self, user: str) -> bool:
        return self.process.sees_store(user)

    async def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
def system(request):
    """One device for the module's real-process tests. cryptohome-sim binds the stores itself,
    as ChromeOS's cryptohome does (hook=False), so a guest's store reaches the daemon too."""
    require_system_world()
    with system_world(request.config, [MYDAEMON], binds=[str(HERE)], hook=False) as world:
        yield world


# ---- the scenarios -------------------------------------------------------------------------


async def sign_in(device) -> None:
    alice = device.alice
    daemon = await device.start()  # at boot, before anyone signs in
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 1, "alice counted, in her vault")
    assert daemon.count(alice) == 1  # what the daemon sees at /run/daemon-store/mydaemon/<h>


async def sign_out(device) -> None:
    alice = device.alice
    daemon = await device.start()
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 1, "alice counted")
    await device.logout()
    await until(lambda: any("session over" in line for line in daemon.log), "the end seen")
    assert daemon.count(alice) is None  # her store is gone from the daemon's view
    await device.login(alice)  # the same daemon, her next session
    await until(lambda: device.vault_count(alice) == 2, "alice counted again")


async def two_users(device) -> None:
    """In turn: ChromeOS signs everyone out together."""
    alice, bob = device.alice, device.bob
    daemon = await device.start()
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 1, "alice counted")
    await device.logout()
    await device.login(bob)
    await until(lambda: device.vault_count(bob) == 1, "bob counted, in his vault")
    assert daemon.count(alice) is None  # only bob's store is in the daemon's view
    await device.logout()
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 2, "alice counted again")
    assert device.vault_count(bob) == 1


async def restart(device) -> None:
    alice = device.alice
    daemon = await device.start()
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 1, "alice counted")
    await daemon.stop()
    await device.start()  # mid-session: it finds alice by asking session_manager
    await until(lambda: device.vault_count(alice) == 2, "alice recovered after the restart")


async def guest(device) -> None:
    """The policy mydaemon keeps (DaemonStoreClient's default): a guest gets nothing."""
    alice = device.alice
    daemon = await device.start()
    await device.login(alice)  # first a user: the daemon is up and following sign-ins
    await until(lambda: device.vault_count(alice) == 1, "alice counted")
    await device.logout()
    await device.login(GUEST)
    await until(lambda: daemon.sees_store(GUEST), "the guest's store in the daemon's view")
    await asyncio.sleep(0.3)  # the daemon's chance to (wrongly) serve the guest
    assert daemon.count(GUEST) is None
    await device.logout()
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 2, "alice counted again")
    assert [line for line in daemon.log if " seen " in line] == [
        f"mydaemon: {alice} seen 1 time(s)", f"mydaemon: {alice} seen 2 time(s)"]


async def late_start(device) -> None:
    alice = device.alice
    await device.login(alice)
    daemon = await device.start()  # after the sign-in: it asks who is signed in
    await until(lambda: device.vault_count(alice) == 1, "alice counted")
    assert daemon.count(alice) == 1


async def keeps_data(device) -> None:
    """The steps naive.sh fails (test_naive_daemon_loses_data): mydaemon passes them."""
    alice = device.alice
    daemon = await device.start()
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 1, "alice counted")
    await device.logout()  # /run/daemon-store/mydaemon/<alice> stays behind, empty
    await daemon.stop()
    daemon = await device.start()  # respawned while nobody is signed in
    await until(lambda: "mydaemon: waiting for sign-ins" in daemon.log, "it runs")
    await asyncio.sleep(0.3)  # its chance to (wrongly) write into the empty directory
    await device.login(alice)
    await until(lambda: device.vault_count(alice) == 2, "alice counted again")
    await device.logout()
    assert device.left_behind(alice) == []  # never a byte in tmpfs


SCENARIOS = [sign_in, sign_out, two_users, restart, guest, late_start, keeps_data]


# ---- the tests -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.daemonstore(daemons=[MYDAEMON])
@pytest.mark.parametrize("bus_world", ["model", "kernel"], indirect=True)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_in_process(scenario, bus_world) -> None:
    device = InProcess(bus_world)
    try:
        await scenario(device)
    finally:
        await device.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_real_process(scenario, system) -> None:
    device = RealProcess(system, scenario.__name__)
    try:
        await scenario(device)
    finally:
        await device.close()


@pytest.mark.asyncio
async def test_keeps_data_even_as_root(system) -> None:
    """As its own user mydaemon could not write into the empty, root-owned directory a
    sign-out leaves; as root (as many system daemons run) nothing but its client stops it."""
    device = RealProcess(system, "root", uid=0)
    try:
        await keeps_data(device)
    finally:
        await device.close()


@pytest.mark.asyncio
async def test_naive_daemon_loses_data(system) -> None:
    """keeps_data's steps with naive.sh, run as root (as many system daemons are): its count
    lands in tmpfs, not in alice's vault."""
    device = RealProcess(system, "naive", uid=0)
    alice = device.alice
    try:
        daemon = await device.start(NAIVE_ARGV)
        await device.login(alice)
        await until(lambda: device.vault_count(alice) == 1, "alice counted")
        await device.logout()
        await daemon.stop()
        await device.start(NAIVE_ARGV)  # finds alice's directory: "signed in"
        await until(lambda: device.left_behind(alice) == ["count"], "a count in tmpfs")
        await device.login(alice)  # her vault covers that count; her directory is not new
        await asyncio.sleep(0.3)  # its chance to count her second sign-in (it does not)
        await device.logout()
    finally:
        await device.close()
    assert device.vault_count(alice) == 1  # a sign-in lost
    assert device.left_behind(alice) == ["count"]  # and her data in RAM, outside her vault
