"""Finding 2, second half: chronos detaching a signed-in user's home with ``rmdir``.

``/home/chronos`` is chronos-owned. In a mount namespace made *before* sign-in, the home mount
points ``/home/chronos/u-<H>`` and ``/home/chronos/user`` are plain directories; the kernel
refuses ``rmdir`` of a mount point only in the caller's namespace (``is_local_mountpoint()``),
so chronos could remove them there, and ``__detach_mounts()`` then took the signed-in user's
home off in every namespace. ``rename(2)`` of an empty directory over one did the same.

Here a real process running as uid 1000 attacks, two ways: an unprivileged user namespace it
made itself (``unshare(CLONE_NEWUSER|CLONE_NEWNS)`` as chronos), and a mount namespace root
made whose process then dropped to uid 1000. Both are made before alice signs in. The fix
(ops/guard.py: a root-owned, non-empty guard directory inside each mount point, put there
before the bind) must turn every attempt into ENOTEMPTY, keep alice's home mounted
everywhere, and still let sign-out remove the mount points (SECURITY.md, "Mount points chronos
cannot remove").
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from daemonstore import mountinfo, paths
from daemonstore.kernel.syscalls import mount, unshare
from daemonstore.kernel.uapi import CLONE_NEWNS
from daemonstore.ops.guard import GUARD_NAME
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import Figures
from tests.hardening.util import errname, guarded, mount_state, real

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)
CHRONOS = 1000
CLONE_NEWUSER = 0x10000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


def _alices(host: Any, h: str) -> list[str]:
    """Mount points of alice's mounts in the current namespace (the test's own oracle: her
    directory vault shows a root under /home/.shadow/<H>/)."""
    return sorted(e.mount_point for e in mountinfo.parse(host.mountinfo())
                  if e.root.startswith(paths.shadow(h) + "/"))


def _attacker(world: World, how: str) -> tuple[int, int, int]:
    """Fork chronos's process: a mount namespace of its own made now (before the sign-in),
    cwd /home/chronos, uid and gid 1000, no groups. It then reads commands (``rmdir NAME`` or
    ``over NAME``: rename an empty directory of its own over NAME) one a line and answers each
    with the errno name (``OK`` on success). Returns (pid, command fd, answer fd)."""
    cmd_r, cmd_w = os.pipe()
    ans_r, ans_w = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(cmd_r)
        os.close(ans_w)
        ready = os.read(ans_r, 64)
        assert ready == b"ready\n", ready
        return pid, cmd_w, ans_r
    try:
        os.close(cmd_w)
        os.close(ans_r)
        os.chdir(real(world, "/home/chronos"))
        if how == "root-made namespace":
            unshare(CLONE_NEWNS)  # a copy of the sandbox child's private namespace
            mount(None, "/", None, MS_REC | MS_PRIVATE)  # in that new namespace only
        os.setgroups([])
        os.setresgid(CHRONOS, CHRONOS, CHRONOS)
        os.setresuid(CHRONOS, CHRONOS, CHRONOS)
        assert os.geteuid() == CHRONOS  # (inside a user namespace without a map: 65534)
        if how == "user namespace":
            # unprivileged: chronos's own namespaces (no uid_map is written: permission
            # checks on the files use the kernel uid, 1000, either way; and the sandbox made
            # /proc read-only in this namespace)
            unshare(CLONE_NEWUSER | CLONE_NEWNS)
        os.write(ans_w, b"ready\n")
        with os.fdopen(cmd_r, "r") as commands:
            for line in commands:
                verb, name = line.split()
                try:
                    if verb == "rmdir":
                        os.rmdir(name)
                    else:
                        os.mkdir("empty", 0o755)
                        try:
                            os.rename("empty", name)
                        finally:
                            if os.path.isdir("empty"):
                                os.rmdir("empty")
                    answer = "OK"
                except OSError as exc:
                    answer = errname(exc.errno)
                os.write(ans_w, f"{answer}\n".encode())
    except BaseException as exc:  # said to the parent, which fails the test with it
        os.write(ans_w, f"setup failed: {exc!r}\n".encode())
    finally:
        os._exit(0)


def _ask(cmd_w: int, ans_r: int, line: str) -> str:
    os.write(cmd_w, f"{line}\n".encode())
    return os.read(ans_r, 64).decode().strip()


def _body(world: World, how: str) -> dict[str, Any]:
    host = world.host
    h = world.login("alice")
    world.logout("alice")  # /home/chronos exists; sign-out removed alice's mount points
    pid, cmd_w, ans_r = _attacker(world, how)
    try:
        world.login("alice", first_user=True)
        mounted = _alices(host, h)
        tries = {f"{verb} {name}": _ask(cmd_w, ans_r, f"{verb} {name}")
                 for name in (f"u-{h}", "user") for verb in ("rmdir", "over")}
        still = _alices(host, h)
        guards = {name: sorted(os.listdir(real(world, f"/home/chronos/{name}")))
                  for name in (f"u-{h}", "user")
                  if os.path.isdir(real(world, f"/home/chronos/{name}"))}
    finally:
        os.kill(pid, signal.SIGKILL)  # the attacker this body forked, by its pid
        os.waitpid(pid, 0)
        os.close(cmd_w)
        os.close(ans_r)
    before_out = mount_state(host)
    result = world.logout("alice")
    left = {name for name in (f"u-{h}", "user")
            if os.path.lexists(real(world, f"/home/chronos/{name}"))}
    world.login("alice")  # and the next sign-in is whole
    again = _alices(host, h)
    world.logout("alice")
    return {"mounted": mounted, "tries": tries, "still": still, "guards": guards,
            "signed_out": result.ok, "warnings": result.warnings, "left": sorted(left),
            "again": again, "changed_before_sign_out": before_out != mount_state(host),
            "h": h}


@pytest.mark.parametrize("how", ["user namespace", "root-made namespace"])
def test_chronos_cannot_remove_a_home_mount_point_from_another_namespace(
        how: str, figures: Figures) -> None:
    out = kernel_world(guarded(_body), how, daemons=[FOO])
    h = out["h"]
    assert f"/home/chronos/u-{h}" in out["mounted"]
    assert paths.HOME_CHRONOS_USER in out["mounted"]
    # every attempt refused: the guard makes each mount point non-empty underneath
    assert out["tries"] == {f"{verb} {name}": "ENOTEMPTY" for name in (f"u-{h}", "user")
                            for verb in ("rmdir", "over")}, out["tries"]
    assert out["still"] == out["mounted"]  # alice's home is still mounted everywhere here
    # what the root namespace sees at the mount points is alice's home, not the guard
    assert all(GUARD_NAME not in names for names in out["guards"].values()), out["guards"]
    assert out["signed_out"], out["warnings"]
    assert out["left"] == []  # sign-out removed both mount points, guard and all
    assert f"/home/chronos/u-{h}" in out["again"]
    lost = len(set(out["mounted"]) - set(out["still"]))
    figures.add(attacks=4, attacks_refused=4, rmdir_tries=4,
                rmdir_refused=sum(v == "ENOTEMPTY" for v in out["tries"].values()),
                rmdir_detached=lost)


def test_the_guard_is_root_owned_and_chronos_cannot_empty_it(figures: Figures) -> None:
    """Underneath the mount (seen from a namespace made before sign-in, as chronos sees it):
    a root-owned 0555 directory holding a root-owned file, which uid 1000 can neither remove,
    empty, nor move out of the mount point."""
    out = kernel_world(guarded(_guard_body), daemons=[FOO])
    assert out["guard"] == (0, 0, 0o555), out
    assert out["marker"] == (0, 0, 0o444), out
    assert out["unlink marker"] == "EACCES", out
    assert out["rmdir guard"] == "ENOTEMPTY", out
    assert out["move guard out"] == "EACCES", out
    assert out["rmdir home"] == "ENOTEMPTY", out
    figures.add(attacks=4, attacks_refused=4)


def _guard_body(world: World) -> dict[str, Any]:
    host = world.host
    h = world.login("alice")
    world.logout("alice")
    with world.in_namespace(world.namespace):
        host.new_namespace("before", "private")
    world.login("alice", first_user=True)
    out: dict[str, Any] = {}
    home = f"/home/chronos/u-{h}"
    with world.in_namespace("before"):
        g = os.lstat(real(world, f"{home}/{GUARD_NAME}"))
        m = os.lstat(real(world, f"{home}/{GUARD_NAME}/keep"))
        out["guard"] = (g.st_uid, g.st_gid, g.st_mode & 0o7777)
        out["marker"] = (m.st_uid, m.st_gid, m.st_mode & 0o7777)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # chronos, in the namespace made before sign-in
            code = 0
            try:
                os.close(read_fd)
                os.chdir(real(world, home))
                os.setgroups([])
                os.setresgid(CHRONOS, CHRONOS, CHRONOS)
                os.setresuid(CHRONOS, CHRONOS, CHRONOS)
                results = []
                for act in (lambda: os.unlink(f"{GUARD_NAME}/keep"),
                            lambda: os.rmdir(GUARD_NAME),
                            lambda: os.rename(GUARD_NAME, "../stolen"),
                            lambda: os.rmdir(f"../u-{h}")):
                    try:
                        act()
                        results.append("OK")
                    except OSError as exc:
                        results.append(errname(exc.errno))
                os.write(write_fd, " ".join(results).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        _, status = os.waitpid(pid, 0)
        got = os.read(read_fd, 256).decode().split()
        os.close(read_fd)
        assert os.waitstatus_to_exitcode(status) == 0
    for label, answer in zip(("unlink marker", "rmdir guard", "move guard out", "rmdir home"),
                             got, strict=True):
        out[label] = answer
    assert world.logout("alice").ok
    return out
