"""The busy sign-out bodies of tests/unit/test_busy_signout.py on the real kernel (a sandbox
child; the daemon's hold is an fd of that child, opened in the daemon's namespace), plus a real
second process as the holder, found through /proc and killed by ``kill_holders``."""

from __future__ import annotations

import os
from typing import Any

import pytest

from daemonstore.world import KernelWorld, World
from tests.kernel.util import spawn_holder
from tests.unit.test_busy_signout import (
    DAEMON,
    busy_sign_out,
    check_busy_sign_out,
    check_killed_sign_out,
    killed_sign_out,
    quiet_sign_out,
)

pytestmark = pytest.mark.kernel


def test_busy_sign_out_on_the_kernel() -> None:
    check_busy_sign_out(KernelWorld().run(busy_sign_out))


def test_kill_holders_on_the_kernel() -> None:
    check_killed_sign_out(KernelWorld().run(killed_sign_out))


def test_no_holders_on_the_kernel() -> None:
    assert KernelWorld().run(quiet_sign_out) == {"holders": [], "ended": [], "lazy": []}


def _process_holder(world: World, kill: bool) -> dict[str, Any]:
    world.install_daemon(*DAEMON)
    view = world.daemon("mydaemon")
    world.login("alice")
    view.write("alice", "state.json", b"saved")

    def daemon() -> None:  # enters its namespace, keeps its cwd in the store
        world.host.use_namespace(view.namespace)
        os.chdir(world.host.root + view.path("alice"))

    pid = spawn_holder(daemon)
    try:
        result = world.logout("alice", kill_holders=kill)
    finally:
        if not kill:
            os.kill(pid, 9)  # our own child, by pid
            os.waitpid(pid, 0)
    return {"pid": pid, "namespace": view.namespace, "holders": result.holders,
            "ended": result.ended, "lazy": result.lazily_detached, "failed": result.failed}


@pytest.mark.parametrize("kill", [False, True], ids=["reported", "killed"])
def test_a_daemon_process_holding_its_store_is_found_and_killed(kill: bool) -> None:
    out = KernelWorld().run(_process_holder, kill)
    [holder] = out["holders"]  # its inherited fds of the sandbox root pin no user mount
    assert holder.startswith(f"pid {out['pid']} (")
    assert f"in namespace {out['namespace']}: cwd /run/daemon-store/mydaemon/" in holder
    if kill:
        [ended] = out["ended"]
        assert ended.startswith(f"pid {out['pid']} (")
        assert out["lazy"] == [] and out["failed"] == []
    else:
        assert out["ended"] == [] and out["lazy"]


def test_status_reports_held_stores_on_the_kernel() -> None:
    from tests.unit.test_busy_signout import check_held_status, held_status

    check_held_status(KernelWorld().run(held_status))
