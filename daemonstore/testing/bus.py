"""The D-Bus fixtures (testing layer): a private bus and a running cryptohome_sim on it, the
bus-driven counterpart of ``World.login`` (which calls ``session.sign_in`` directly).

The plugin (:mod:`daemonstore.testing`) registers every fixture below: a suite needs no conftest
line. Importing this module loads neither D-Bus nor cryptohome_sim; they load when a fixture
runs. Without ``dbus-daemon`` the fixtures skip with the reason (fail when ``CI`` is set).

``private_bus``
    a private ``dbus-daemon`` (:class:`cryptohome_sim.bus.PrivateBus`: ``address``, ``pid``)
    with the shipped policies (root: the user running the tests; chronos: Debian's ``daemon``)
    and the daemon role granted to Debian's ``bin``; ``DBUS_SYSTEM_BUS_ADDRESS`` points at it
    for the test and ``DBUS_SESSION_BUS_ADDRESS`` is removed, so nothing can reach the
    machine's own buses. Stopped (only that pid) afterwards.
``cryptohome_service`` (async)
    cryptohome + session manager serving a fresh ModelHost on that bus, in the test's own
    asyncio loop (deterministic: nothing runs between two awaits of the test).
    ``await cryptohome_service.login("alice")`` signs in over the bus with ChromeOS's calls
    (StartAuthSession ... PreparePersistentVault, StartSession); ``logout()`` ends the session
    for everyone and unmounts every user, as ChromeOS (which has no per-user sign-out; the
    in-process ``World.logout(user)`` keeps one for tests).
``cryptohome_client`` (async)
    a second, independent connection (a :class:`daemonstore.dbus.client.Client`).
``bus_world`` (async tests)
    a :class:`daemonstore.world.World` on the host cryptohome-sim serves, with ``world.bus`` a
    connected Client and ``world.cryptohome`` the :class:`RunningCryptohome`; the
    ``daemonstore`` mark's daemons installed. Sign in with ``await world.bus.login("alice")``
    (over the bus, ``started`` emitted), check with ``view.sees_store("alice")``. One thread,
    one loop: the World and the service never touch the Host at the same time.
    On the kernel (``@pytest.mark.daemonstore(backend="kernel")``, or
    ``@pytest.mark.parametrize("bus_world", ["model", "kernel"], indirect=True)``) the plugin
    runs the whole ``async def`` test in ``run_in_sandbox``'s child, in that child's own event
    loop, with a private ``dbus-daemon`` and cryptohome-sim serving the sandbox's KernelHost
    started there (:func:`kernel_bus_main`); the other bus fixtures cannot be combined with it
    (they would serve a second, model host).
``cryptohome_thread``
    the same service in a background thread with its own loop, for synchronous tests (click's
    CliRunner runs ``asyncio.run`` itself). Reach the host through :meth:`ThreadedCryptohome.call`
    so it is only ever touched from the Host's lane (daemonstore.hostlane), as the service does.

A bus test::

    @pytest.mark.asyncio
    @pytest.mark.daemonstore(daemons=[("mydaemon", 20100, 20100, 0o700)])
    async def test_store_follows_the_session(bus_world):
        view = bus_world.daemon("mydaemon")
        result = await bus_world.bus.login("alice@example.com")
        assert view.sees_store(result.user_hash)
        await bus_world.bus.logout()
        assert not view.sees_store(result.user_hash)

``@pytest.mark.asyncio`` is pytest-asyncio's (strict mode); a kernel ``bus_world`` test runs
without it too, since the plugin runs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import pytest_asyncio

from daemonstore.hostlane import lane_for
from daemonstore.testing.settings import (
    SETTINGS,
    WorldSettings,
    require_kernel,
    skip_or_fail,
    world_settings,
)
from daemonstore.world import World

# The plugin imports this module to register the fixtures, for every test of every project
# that installs daemonstore: D-Bus, cryptohome_sim and the model load only when a bus fixture
# runs (the imports inside the functions below).
if TYPE_CHECKING:
    from cryptohome_sim.bus import PrivateBus
    from cryptohome_sim.core import Cryptohome
    from cryptohome_sim.service import Service
    from daemonstore.dbus.client import Client, LoginResult, LogoutResult
    from daemonstore.host import Host

T = TypeVar("T")
#: the line ``cryptohome-sim`` prints once both names are owned
READY_PREFIX = "cryptohome-sim: serving "
#: the name the world fixtures and the mark use (testing.settings)
BUS_WORLD = "bus_world"


def privileged_user() -> str:
    """Who the private bus's policy treats as root: root, or the user running the tests."""
    from cryptohome_sim.bus import current_user

    return "root" if os.geteuid() == 0 else current_user()


#: the account the private bus's policy treats as ``chronos`` (a test machine has no chronos;
#: Debian's ``daemon`` exists everywhere and owns nothing of ours). dbus-daemon refuses a
#: connection from a uid without a passwd entry, so a made-up uid would not do.
CHRONOS_STAND_IN = "daemon"
#: an account the private bus's grant files give the daemon role (a daemon's own user, as
#: ``daemonstore install --daemon-user`` grants it); Debian's ``bin`` exists everywhere too
DAEMON_STAND_IN = "bin"


def require_dbus_daemon() -> None:
    """Skip (fail under ``CI``) when ``dbus-daemon`` is not installed."""
    from cryptohome_sim.bus import find_dbus_daemon

    if find_dbus_daemon() is None:
        skip_or_fail("D-Bus", "dbus-daemon is not installed (Debian package 'dbus')")


def caller_ids(bus: PrivateBus) -> Any:
    """The :class:`cryptohome_sim.callers.CallerIds` of ``bus``'s policy (its root and chronos
    stand-ins, and the daemon users of the grant files in its policy directory), for the
    service's own caller check: both layers then agree."""
    from cryptohome_sim.callers import CallerIds

    return CallerIds.named(bus.privileged_user, bus.chronos).with_grants(str(bus.policy_dir))


def start_bus() -> PrivateBus:
    """A private ``dbus-daemon`` with the shipped policies (root and the chronos stand-in) and
    a grant file for the daemon stand-in."""
    from cryptohome_sim.bus import start_private_bus

    return start_private_bus(privileged_user=privileged_user(), chronos=CHRONOS_STAND_IN,
                             daemon_users=(DAEMON_STAND_IN,))


@pytest.fixture
def private_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    from daemonstore.command import ENV_BUS_ADDRESS

    require_dbus_daemon()
    with start_bus() as bus:
        monkeypatch.setenv(ENV_BUS_ADDRESS, bus.address)
        monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
        yield bus


class RunningCryptohome:
    """A started :class:`~cryptohome_sim.service.Service` plus the clients opened on it."""

    def __init__(self, bus: PrivateBus, core: Cryptohome, service: Service) -> None:
        self.bus = bus
        self.core = core
        self.service = service
        self._clients: list[Client] = []
        self._own: Client | None = None

    @classmethod
    async def start(cls, bus: PrivateBus, host: Host, *,
                    random_bytes: Callable[[int], bytes] = os.urandom) -> RunningCryptohome:
        """cryptohome + session manager serving ``host`` on ``bus``, in the running loop."""
        from cryptohome_sim.core import Cryptohome
        from cryptohome_sim.service import Service

        core = Cryptohome(host, random_bytes=random_bytes)
        return cls(bus, core, await Service.start(core, bus.address, caller_ids(bus)))

    @property
    def address(self) -> str:
        return self.bus.address

    @property
    def host(self) -> Host:
        return self.core.host

    async def client(self) -> Client:
        """A new connection to the bus, closed at teardown."""
        from daemonstore.dbus.client import Client

        client = await Client.connect(self.address)
        self._clients.append(client)
        return client

    async def _default(self) -> Client:
        if self._own is None:
            self._own = await self.client()
        return self._own

    async def login(self, username: str, *, guest: bool = False,
                    ephemeral: bool = False) -> LoginResult:
        """Chrome's sign-in calls, then StartSession (what ``daemonstore login`` does)."""
        return await (await self._default()).login(username, guest=guest, ephemeral=ephemeral)

    async def logout(self) -> LogoutResult:
        """StopSession (everyone), then Unmount{} (what ``daemonstore logout`` does)."""
        return await (await self._default()).logout()

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()
        await self.service.stop()


@pytest_asyncio.fixture
async def cryptohome_service(private_bus: PrivateBus) -> AsyncIterator[RunningCryptohome]:
    from daemonstore.model import ModelHost

    running = await RunningCryptohome.start(private_bus, ModelHost())
    try:
        yield running
    finally:
        await running.close()


@pytest_asyncio.fixture
async def cryptohome_client(cryptohome_service: RunningCryptohome) -> Client:
    return await cryptohome_service.client()


async def attach(world: World, running: RunningCryptohome) -> World:
    """``world.bus`` a connected client of ``running``, ``world.cryptohome`` the service."""
    world.bus = await running.client()
    world.cryptohome = running
    return world


@pytest_asyncio.fixture
async def daemonstore_model_bus_world(
        request: pytest.FixtureRequest,
        cryptohome_service: RunningCryptohome) -> World:
    """``bus_world`` on the model (what ``bus_world`` returns unless the kernel is asked)."""
    settings: WorldSettings = request.node.stash[SETTINGS]
    world = World(cryptohome_service.host, random_bytes=random.Random(settings.seed).randbytes)
    for spec in settings.daemons:
        world.install_daemon(*spec)
    return await attach(world, cryptohome_service)


@pytest.fixture
def bus_world(request: pytest.FixtureRequest) -> World:
    """A World whose sign-ins go over D-Bus (module docstring); on the kernel a handle, and the
    plugin runs the ``async def`` test in the sandbox child with the real world."""
    settings = world_settings(request.node, getattr(request, "param", None))
    request.node.stash[SETTINGS] = settings
    if settings.backend == "kernel":
        from daemonstore.testing.sandboxed import KernelBusWorld

        require_kernel("kernel bus_world")
        require_dbus_daemon()
        return KernelBusWorld(settings.daemons)
    return request.getfixturevalue("daemonstore_model_bus_world")


def kernel_bus_main(settings: WorldSettings, handle: Any, fn: Callable[..., Any],
                    kwargs: dict[str, Any], name: str) -> Callable[[Host], None]:
    """The body of the sandbox child for a kernel ``bus_world``: a private dbus-daemon,
    cryptohome-sim serving the sandbox's KernelHost, the World attached, and the ``async def``
    test run in the child's own event loop; everything stopped after it."""
    from daemonstore.command import ENV_BUS_ADDRESS
    from daemonstore.testing.sandboxed import build_world

    async def serve(host: Host) -> None:
        with start_bus() as bus:
            os.environ[ENV_BUS_ADDRESS] = bus.address  # the child's own environment
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
            seeded = random.Random(settings.seed).randbytes
            running = await RunningCryptohome.start(bus, host, random_bytes=seeded)
            try:
                world = await attach(build_world(host, settings, handle), running)
                await fn(**{**kwargs, name: world})
            finally:
                await running.close()

    def main(host: Host) -> None:
        asyncio.run(serve(host))

    return main


class ThreadedCryptohome:
    """The service in a daemon thread running its own asyncio loop."""

    def __init__(self, bus: PrivateBus, core: Cryptohome) -> None:
        self.bus = bus
        self.core = core
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cryptohome-sim",
                                        daemon=True)
        self._service: Service | None = None

    @property
    def address(self) -> str:
        return self.bus.address

    def start(self) -> None:
        self._thread.start()
        from cryptohome_sim.service import Service

        self._service = self._submit(Service.start(self.core, self.bus.address,
                                                   caller_ids(self.bus)))

    def _submit(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` in the Host's lane (daemonstore.hostlane: the only thread that
        touches the Host), after whatever the service queued there before."""
        return lane_for(self.core.host).call(fn, timeout=timeout)

    def stop(self) -> None:
        if self._service is not None:
            self._submit(self._service.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def cryptohome_thread(private_bus: PrivateBus) -> Iterator[ThreadedCryptohome]:
    from cryptohome_sim.core import Cryptohome
    from daemonstore.model import ModelHost

    threaded = ThreadedCryptohome(private_bus, Cryptohome(ModelHost()))
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


def spawn_cryptohome_sim(*args: str, timeout: float = 15.0,
                         env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Run ``python -m cryptohome_sim ARGS`` and wait for its ready line; returns the process
    and everything it printed up to and including that line. The caller ends it (SIGTERM)."""
    proc = subprocess.Popen([sys.executable, "-m", "cryptohome_sim", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    pool = concurrent.futures.ThreadPoolExecutor(1)
    stdout = proc.stdout
    try:
        while stdout is not None:
            line = pool.submit(stdout.readline).result(timeout)
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                proc.wait(5)
                raise RuntimeError(f"cryptohome-sim exited {proc.returncode}: {err.strip()}")
            lines.append(line)
            if line.startswith(READY_PREFIX):
                return proc, "".join(lines)
        raise RuntimeError("cryptohome-sim was started without a stdout pipe")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        pool.shutdown(wait=False)
