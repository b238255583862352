"""Busy mounts on the real kernel (kernel/holds.py): this process's holds, other processes found
through /proc (fd, cwd), ending a holder, syncfs. Each test runs in a sandbox child; the helper
processes are that child's own children, ended by pid."""

from __future__ import annotations

import errno
import os

import pytest

from daemonstore.kernel import run_in_sandbox
from daemonstore.kernel.host import KernelHost
from tests.kernel.util import spawn_holder

pytestmark = pytest.mark.kernel


def _setup(host: KernelHost) -> None:
    host.mkdir("/a")
    host.mount_tmpfs("ta", "/a")
    host.mkdir("/a/d")
    host.write_file("/a/d/f", b"data")


def _own_hold(host: KernelHost) -> list[object]:
    _setup(host)
    host.hold("F", "/a/d/f")
    out: list[object] = []
    try:
        host.umount("/a")
    except OSError as exc:
        out.append(exc.errno)
    [found] = host.open_files()
    out.append((found.holder, found.how, found.path, found.attached,
                found.mnt_id == host.stat("/a").mnt_id))
    host.umount("/a", detach=True)
    [found] = host.open_files()
    out.append(found.attached)
    host.end_holder(found)
    out.append(host.open_files())
    return out


def test_own_hold_pins_its_mount_and_is_reported() -> None:
    busy, found, attached_after, after = run_in_sandbox(_own_hold)
    assert busy == errno.EBUSY
    assert found == ("F", "hold", "/a/d/f", True, True)
    assert attached_after is False
    assert after == []


def _child_holds(host: KernelHost, chdir: bool) -> list[object]:
    _setup(host)
    fd = host.open_fd("/a/d/f", os.O_RDONLY)
    # the "daemon": keeps fd (or its cwd) on the mount until killed
    pid = spawn_holder(lambda: os.chdir(host.root + "/a/d") if chdir else None)
    os.close(fd)
    out: list[object] = []
    try:
        host.umount("/a")
    except OSError as exc:
        out.append(exc.errno)
    # the child also inherited the host's O_PATH fd of the sandbox root: not on /a
    mine = [f for f in host.open_files() if f.pid == pid and f.path.startswith("/a/")]
    out.append(sorted(f.how.split()[0] for f in mine))
    out.append({f.path for f in mine})
    out.append(all(f.namespace == "init" and f.holder.startswith(f"pid {pid} ") for f in mine))
    host.end_holder(mine[0])
    out.append([f for f in host.open_files() if f.pid == pid])
    host.umount("/a")
    with pytest.raises(OSError) as gone:
        host.end_holder(mine[0])
    out.append(gone.value.errno)
    return out


@pytest.mark.parametrize("chdir", [False, True], ids=["fd", "cwd"])
def test_another_process_is_found_through_proc_and_killed(chdir: bool) -> None:
    busy, hows, paths, named, after, gone = run_in_sandbox(_child_holds, chdir)
    assert busy == errno.EBUSY
    assert hows == (["cwd", "fd"] if chdir else ["fd"])
    assert "/a/d/f" in paths
    assert named
    assert after == []
    assert gone == errno.ESRCH


def _syncfs(host: KernelHost) -> list[int]:
    _setup(host)
    host.syncfs("/a/d/f")
    try:
        host.syncfs("/a/missing")
    except OSError as exc:
        return [exc.errno]
    return []


def test_syncfs() -> None:
    assert run_in_sandbox(_syncfs) == [errno.ENOENT]
