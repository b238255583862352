"""A process's own view on the real kernel, without a Host (kernel/local.py and
store_check.store_status_here): the statx mount id of a plain path, the store check from
/proc/self/mountinfo, and the POLLPRI wake-up on a mount-table change.

Each body runs in run_in_sandbox's forked child; the process enters the daemon's namespace itself
(``host.use_namespace``), as a jailed daemon lives in it, and checks plain paths under the
sandbox root (``root=``: the sandbox's ``/run`` is not the machine's)."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

import pytest

from daemonstore import mountinfo, paths
from daemonstore.daemon.store_check import require_store_here, store_status_here
from daemonstore.kernel import local
from daemonstore.world import World, kernel_world

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)


def _as_daemon_user(fn: Any) -> int:
    """Run ``fn()`` in a forked grandchild that dropped root for the daemon's uid (20100): its
    return value (a small int) is the exit status. What a daemon can do unprivileged."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setresgid(20100, 20100, 20100)
            os.setresuid(20100, 20100, 20100)
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _plain_paths(world: World) -> dict[str, Any]:
    host = world.host
    view = world.daemon("foo")
    user_hash = world.login("alice")
    store = paths.user_store("foo", user_hash)
    here = host.root + store  # the same directory, as this process names it
    out: dict[str, Any] = {"here": here}
    host.use_namespace(view.namespace)  # this process now lives where the daemon does
    try:
        table = mountinfo.parse(local.read_mountinfo())
        out["id_matches"] = [e.mount_point for e in table
                             if e.mount_id == local.mount_id(here)] == [here]
        out["mounted"] = store_status_here("foo", user_hash, root=host.root)
        out["require"] = require_store_here("foo", user_hash, root=host.root)
        out["cache"] = store_status_here("foo", user_hash, cache=True, root=host.root).mounted
        out["unprivileged"] = _as_daemon_user(
            lambda: int(store_status_here("foo", user_hash, root=host.root).mounted))
        # a symlink anywhere on the way is refused (ELOOP), never followed
        host.symlink(host.root + "/run", "/linked")
        try:
            local.mount_id(host.root + "/linked/daemon-store/foo")
        except OSError as exc:
            out["symlink"] = errno.errorcode[exc.errno or 0]
        with world.in_namespace(world.namespace):
            world.logout("alice")
        out["after"] = store_status_here("foo", user_hash, root=host.root)
    finally:
        host.use_namespace(world.namespace)
    return out


def test_store_status_here_reads_the_processs_own_view() -> None:
    out = kernel_world(_plain_paths, daemons=[FOO])
    assert out["id_matches"]
    assert out["mounted"].mounted and out["mounted"].path == out["here"]
    assert out["require"] == out["here"]
    assert out["cache"] is True
    assert out["unprivileged"] == 1  # statx and /proc/self/mountinfo need no root
    assert out["symlink"] == "ELOOP"
    assert not out["after"].mounted
    assert out["after"].path == out["here"]


def _watch(world: World) -> dict[str, Any]:
    host = world.host
    view = world.daemon("foo")

    async def go() -> dict[str, Any]:
        host.use_namespace(view.namespace)
        calls: list[int] = []
        changed = asyncio.Event()

        def notify() -> None:
            calls.append(1)
            changed.set()

        stop = local.watch_mount_table(notify)
        try:
            await asyncio.sleep(0.05)
            quiet = len(calls)  # nothing changed yet: no wake-up
            with world.in_namespace(world.namespace):
                world.login("alice")  # the store binds propagate into the daemon's namespace
            async with asyncio.timeout(5):
                await changed.wait()
            await asyncio.sleep(0.05)
            after_login = len(calls)  # woken, and quiet again (not spinning on POLLIN)
            changed.clear()
            with world.in_namespace(world.namespace):
                host.new_namespace("elsewhere", "private")
                host.mkdir("/elsewhere", 0o755)
                host.mount_tmpfs("x", "/elsewhere")  # in a private namespace: never seen here
                host.use_namespace(world.namespace)
            await asyncio.sleep(0.05)
            unrelated = len(calls) - after_login
        finally:
            stop()
            host.use_namespace(world.namespace)
        return {"quiet": quiet, "after_login": after_login, "unrelated": unrelated}

    return asyncio.run(go())


def test_a_mount_table_change_wakes_the_loop_once() -> None:
    out = kernel_world(_watch, daemons=[FOO])
    assert out["quiet"] == 0
    assert out["after_login"] == 1  # the login is one loop pass: one wake-up, then quiet
    assert out["unrelated"] == 0
