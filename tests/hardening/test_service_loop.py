"""Finding 7, the service loop: a long sign-in must not stop cryptohome-sim (or the hook) from
answering. The Host work runs in the Host's lane (daemonstore.hostlane), one thread, one job at
a time; the asyncio loop stays free for everything that needs no Host.

Proved by ordering, never by wall-clock time: the sign-in is held inside its first bind (in
the lane) until a cheap call has been answered; before the fix the loop itself was stuck in
that bind, so the cheap answer could only come after the sign-in. A large sign-in (hundreds of
templates) is raced the same way, unheld."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from daemonstore.boot.apply import run_startup
from daemonstore.boot.seed import install_template
from daemonstore.dbus.client import Client
from daemonstore.hook.service import HookService
from daemonstore.hostlane import lane_for
from daemonstore.testing.bus import RunningCryptohome
from daemonstore.world import World
from tests.hardening.conftest import Figures

#: how long a held step waits at most: the old code (loop blocked in the step) ends the hold by
#: this timeout, so the test fails in about this time instead of hanging
HOLD = 3.0


class Held:
    """Hold the first call of ``host.<method>`` until released (in whatever thread runs it)."""

    def __init__(self, host: Any, method: str) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.thread: str | None = None
        real = getattr(host, method)

        def held(*args: Any, **kwargs: Any) -> Any:
            if not self.entered.is_set():
                self.thread = threading.current_thread().name
                self.entered.set()
                self.released.wait(HOLD)
            return real(*args, **kwargs)

        setattr(host, method, held)

    async def wait_entered(self) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.entered.wait, HOLD)


@pytest.mark.dbus
@pytest.mark.asyncio
async def test_a_cheap_call_is_answered_while_a_sign_in_holds_the_host(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client,
        figures: Figures) -> None:
    await cryptohome_client.install_daemon("biod", 0, 0, 0o700)
    other = await cryptohome_service.client()
    expected = await other.sanitized_username("bob")  # the salt is read: no Host needed now
    sid, _exists = await cryptohome_client.start_auth_session("alice")
    await cryptohome_client.create_persistent_user(sid)
    hold = Held(cryptohome_service.host, "bind")
    # the one call that mounts (what took the loop 7.5 s with 10k templates)
    signin = asyncio.ensure_future(cryptohome_client.prepare_persistent_vault(sid))
    assert await hold.wait_entered()
    got = await other.sanitized_username("bob")
    state = await other.session_state()
    done_before = signin.done()  # the answers came while the sign-in was held in the lane
    hold.released.set()
    h = await signin
    assert got == expected and state == "stopped"
    assert not done_before
    assert h == cryptohome_service.core.hash_of("alice")
    assert hold.thread is not None and hold.thread.startswith("host-lane"), hold.thread
    assert (await other.is_mounted("alice")) == (True, False)
    figures.add(loop_signins=1, loop_answered=2)


@pytest.mark.dbus
@pytest.mark.asyncio
async def test_cheap_calls_overtake_a_large_sign_in(cryptohome_service: RunningCryptohome,
                                                    cryptohome_client: Client,
                                                    figures: Figures) -> None:
    host = cryptohome_service.host
    count = 300

    def install() -> None:
        for i in range(count):
            install_template(host, f"d{i:04d}", 0, 0, 0o700)
        run_startup(host)

    await lane_for(host).run(install)
    other = await cryptohome_service.client()
    await other.sanitized_username("bob")
    sid, _exists = await cryptohome_client.start_auth_session("alice")
    await cryptohome_client.create_persistent_user(sid)
    order: list[str] = []
    signin = asyncio.ensure_future(cryptohome_client.prepare_persistent_vault(sid))
    signin.add_done_callback(lambda _f: order.append("sign-in"))
    await asyncio.sleep(0)
    answered = 0
    while not signin.done() and answered < 50:
        await other.sanitized_username(f"user{answered}")
        order.append("cheap")
        answered += 1
    await signin
    assert answered > 0
    mounted = await lane_for(host).run(host.mountinfo)
    assert mounted.count(cryptohome_service.core.hash_of("alice")) >= 2 * count  # every store
    # at least one cheap call came back before the sign-in did
    assert order.index("cheap") < order.index("sign-in"), order[:5]
    figures.add(loop_signins=1, loop_answered=order.index("sign-in"))


@pytest.mark.asyncio
async def test_the_hook_keeps_its_loop_while_a_pass_runs() -> None:
    """HookService.converge_in_lane: the pass runs in the lane, the loop keeps ticking."""
    world = World.model()
    world.install_daemon("biod", 0, 0, 0o700)
    world.run_startup()
    service = HookService(world.host, None, lambda line: None,  # type: ignore[arg-type]
                          watch_mounts=False)
    hold = Held(world.host, "mountinfo")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not hold.released.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    running = asyncio.ensure_future(service.converge_in_lane("test", set()))
    tick = asyncio.ensure_future(ticker())
    assert await hold.wait_entered()
    seen = ticks
    await asyncio.sleep(0.02)
    moved = ticks > seen  # the loop ran while the pass was held in the lane
    hold.released.set()
    await running
    await tick
    assert moved
    assert hold.thread is not None and hold.thread.startswith("host-lane")
