"""Pytest fixtures for D-Bus tests: a private bus and a running cryptohome_sim on it (testing
layer; the bus-driven counterpart of ``World.login``, which calls ``session.sign_in`` directly).

Fixtures (import them into a conftest):

``private_bus``
    a private ``dbus-daemon`` (:class:`cryptohome_sim.bus.PrivateBus`: ``address``, ``pid``);
    ``DBUS_SYSTEM_BUS_ADDRESS`` points at it for the test and ``DBUS_SESSION_BUS_ADDRESS`` is
    removed, so nothing can reach the machine's own buses. Stopped (only that pid) afterwards.
``cryptohome_service`` (async)
    cryptohome + session manager serving a fresh ModelHost on that bus, in the test's own
    asyncio loop (deterministic: nothing runs between two awaits of the test).
    ``await cryptohome_service.login("alice")`` signs in over the bus with ChromeOS's calls
    (StartAuthSession ... PreparePersistentVault, StartSession); ``logout()`` ends the session
    for everyone and unmounts every user, as ChromeOS (which has no per-user sign-out; the
    in-process ``World.logout(user)`` keeps one for tests).
``cryptohome_client`` (async)
    a second, independent connection (a :class:`daemonstore.dbus.client.Client`).
``bus_world`` (async)
    a :class:`daemonstore.world.World` on the host that ``cryptohome_service`` serves, with
    ``world.bus`` a connected Client: install daemons and open daemon views with the World,
    sign in with ``await world.bus.login("alice")`` (over the bus, ``started`` emitted), check
    with ``view.sees_store("alice")``. One thread, one loop: the World and the service never
    touch the Host at the same time.
``cryptohome_thread``
    the same service in a background thread with its own loop, for synchronous tests (click's
    CliRunner runs ``asyncio.run`` itself). Reach the host through :meth:`ThreadedCryptohome.call`
    so it is only ever touched from the Host's lane (daemonstore.hostlane), as the service does.

Tests using them should carry ``@pytest.mark.dbus`` and ``@pytest.mark.asyncio`` (the async
ones); see tests/dbus/conftest.py for the skip-or-fail rule when dbus-daemon is missing.
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
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from cryptohome_sim.bus import PrivateBus, current_user, start_private_bus
from cryptohome_sim.core import Cryptohome
from cryptohome_sim.service import Service
from daemonstore.command import ENV_BUS_ADDRESS
from daemonstore.dbus.client import Client, LoginResult, LogoutResult
from daemonstore.host import Host
from daemonstore.hostlane import lane_for
from daemonstore.model import ModelHost
from daemonstore.world import World

T = TypeVar("T")
#: the line ``cryptohome-sim`` prints once both names are owned
READY_PREFIX = "cryptohome-sim: serving "


def privileged_user() -> str:
    """Who the private bus's policy treats as root: root, or the user running the tests."""
    return "root" if os.geteuid() == 0 else current_user()


#: the account the private bus's policy treats as ``chronos`` (a test machine has no chronos;
#: Debian's ``daemon`` exists everywhere and owns nothing of ours). dbus-daemon refuses a
#: connection from a uid without a passwd entry, so a made-up uid would not do.
CHRONOS_STAND_IN = "daemon"


@pytest.fixture
def private_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    with start_private_bus(privileged_user=privileged_user(),
                           chronos=CHRONOS_STAND_IN) as bus:
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

    @property
    def address(self) -> str:
        return self.bus.address

    @property
    def host(self) -> Host:
        return self.core.host

    async def client(self) -> Client:
        """A new connection to the bus, closed at teardown."""
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
    core = Cryptohome(ModelHost())
    running = RunningCryptohome(private_bus, core, await Service.start(core, private_bus.address))
    try:
        yield running
    finally:
        await running.close()


@pytest_asyncio.fixture
async def cryptohome_client(cryptohome_service: RunningCryptohome) -> Client:
    return await cryptohome_service.client()


@pytest_asyncio.fixture
async def bus_world(cryptohome_service: RunningCryptohome) -> World:
    world = World(cryptohome_service.host, random_bytes=random.Random(0).randbytes)
    world.bus = await cryptohome_service.client()
    return world


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
        self._service = self._submit(Service.start(self.core, self.bus.address))

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
