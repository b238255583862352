"""The hook's service loop (daemonstore.hook.service.HookService) against a stand-in bus client
on the model: converge at start, on ``started`` (naming the active sessions) and ``stopped``,
a new subscription when the session manager changes owner, a clean stop, exit 1 when the bus
goes. The real bus and kernel: tests/system/test_container.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from daemonstore.dbus.client import CallError
from daemonstore.hook.service import HookService
from daemonstore.world import World
from tests.unit.test_hook import DAEMONS, login_without_stores, store_mounts


class FakeClient:
    """The four things HookService uses of daemonstore.dbus.client.Client."""

    def __init__(self, owner: str | None = ":1.1") -> None:
        self.owner = owner
        self.owners: asyncio.Queue[str] = asyncio.Queue()
        self.states: list[asyncio.Queue[str]] = []
        self.sessions: dict[str, str] = {}
        self.closed = asyncio.Event()

    @asynccontextmanager
    async def name_owner_changes(self, name: str) -> AsyncIterator[asyncio.Queue[str]]:
        assert name == "org.chromium.SessionManager"
        yield self.owners

    @asynccontextmanager
    async def session_states(self) -> AsyncIterator[asyncio.Queue[str]]:
        if self.owner is None:
            raise CallError("GetNameOwner", "org.freedesktop.DBus.Error.NameHasNoOwner", "")
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.states.append(queue)
        yield queue

    async def active_sessions(self) -> dict[str, str]:
        return dict(self.sessions)

    async def wait_closed(self) -> None:
        await self.closed.wait()


@pytest.fixture
def world() -> World:
    w = World.model()
    for name, uid, gid, mode in DAEMONS:
        w.install_daemon(name, uid, gid, mode)
    return w


async def until(predicate: object, what: str) -> None:
    for _ in range(200):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.asyncio
async def test_signals_drive_the_binds_and_sigterm_stops_cleanly(world: World) -> None:
    h_early = login_without_stores(world, "early@example.com")  # mounted before the hook
    client = FakeClient()
    client.sessions = {"early@example.com": h_early}
    lines: list[str] = []
    stop = asyncio.Event()
    service = HookService(world.host, client, lines.append,  # type: ignore[arg-type]
                          watch_mounts=False)
    task = asyncio.ensure_future(service.run(stop))
    await until(lambda: client.states, "the subscription")
    # converged at start: the user mounted before the hook came up has the stores
    assert lines == [f"start: bound 4 stores of {h_early}: " + ", ".join(
        f"/run/daemon-store{c}/{d}" for c in ("", "-cache") for d in ("crash", "debugd"))]
    h = login_without_stores(world, "alice@example.com")
    # mounted, no session yet (cryptohome may still be signing her in): left alone
    client.states[-1].put_nowait("stopped")
    client.owners.put_nowait(":1.1")
    await until(lambda: len(lines) == 2, "the owner line")
    assert lines[1] == "org.chromium.SessionManager is now owned by :1.1"
    assert not any(m.endswith(h) for m in store_mounts(world))
    lines.clear()
    lines.append("(start)")
    client.sessions["alice@example.com"] = h
    client.states[-1].put_nowait("started")
    await until(lambda: len(lines) == 3, "the started pass")
    assert lines[1] == (f"session started: active sessions: alice@example.com ({h}), "
                        f"early@example.com ({h_early})")
    assert lines[2].startswith(f"session started: bound 4 stores of {h}")
    assert len([m for m in store_mounts(world) if m.endswith(h)]) == 4
    # stopping changes nothing (the vault is still mounted); nothing is logged
    client.states[-1].put_nowait("stopping")
    # a restarted session manager: a new subscription, and a converge pass (nothing to do)
    client.owners.put_nowait(":1.7")
    await until(lambda: len(client.states) == 3, "the new subscription")
    await until(lambda: len(lines) == 4, "the owner line")
    assert lines[3] == "org.chromium.SessionManager is now owned by :1.7"
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


@pytest.mark.asyncio
async def test_no_session_manager_yet_then_the_bus_goes(world: World) -> None:
    client = FakeClient(owner=None)
    lines: list[str] = []
    service = HookService(world.host, client, lines.append,  # type: ignore[arg-type]
                          watch_mounts=False)
    task = asyncio.ensure_future(service.run(asyncio.Event()))
    await until(lambda: lines, "the waiting line")
    assert lines == ["org.chromium.SessionManager is not on the bus: waiting for it"]
    client.owner = ":1.3"
    client.owners.put_nowait(":1.3")
    await until(lambda: client.states, "the subscription once it appears")
    client.closed.set()
    assert await asyncio.wait_for(task, 5) == 1
