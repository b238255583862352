"""Mount-point guards (ops/guard.py) on the model: the rmdir that detached a signed-in user's
home from a namespace made before sign-in is ENOTEMPTY, and every way a session ends (sign-out,
rollback, repair) takes the guard away again. The kernel suite
(tests/hardening/test_rmdir_dos.py) makes the same attack as uid 1000."""

from __future__ import annotations

import errno
import itertools

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.ops import GuardMountPoint, RemoveDir
from daemonstore.ops.guard import GUARD_MODE, GUARD_NAME, MARKER_NAME, is_guard, remove_guard
from daemonstore.session.repair import plan_repair, repair
from daemonstore.world import World


@pytest.fixture
def world() -> World:
    w = World.model()
    w.install_daemon("foo", 20100, 20100, 0o700)
    w.run_startup()
    return w


def _alices(world: World, h: str, ns: str | None = None) -> list[str]:
    return sorted(e.mount_point for e in mountinfo.parse(world.host.mountinfo(ns))
                  if e.root.startswith(paths.shadow(h) + "/"))


def _homes(h: str) -> tuple[str, str]:
    return paths.home_chronos(h), paths.HOME_CHRONOS_USER


def test_the_plan_guards_only_the_mount_points_in_chronos_owned_home_chronos(
        world: World) -> None:
    h = world.hash_of("alice")
    plan = session.plan_sign_in(world.host, h, first_user=True)
    guarded = [op.path for op in plan.steps if isinstance(op, GuardMountPoint)]
    assert sorted(guarded) == sorted(_homes(h))
    # each guard comes after its directory is made and before anything is mounted on it
    for path in guarded:
        at = plan.steps.index(GuardMountPoint(path))
        binds = [i for i, op in enumerate(plan.steps) if getattr(op, "target", None) == path]
        assert binds and at < min(binds)


def test_rmdir_from_a_namespace_made_before_sign_in_is_refused(world: World) -> None:
    host = world.host
    h = world.login("alice")
    world.logout("alice")
    with world.in_namespace(world.namespace):
        host.new_namespace("before", "private")
    world.login("alice", first_user=True)
    mounted = _alices(world, h)
    with world.in_namespace("before"):
        for path in _homes(h):
            with pytest.raises(OSError) as caught:
                host.rmdir(path, safe=True)
            assert caught.value.errno == errno.ENOTEMPTY, path
            assert host.listdir(path, safe=True) == [GUARD_NAME]
            st = host.lstat(f"{path}/{GUARD_NAME}", safe=True)
            assert (st.uid, st.gid, st.perm) == (0, 0, GUARD_MODE)
    assert _alices(world, h) == mounted  # still mounted in the root namespace
    result = world.logout("alice")
    assert result.ok, result.warnings
    for path in _homes(h):
        assert not host.exists(path)  # sign-out removed the guard and the mount point
    assert _alices(world, h) == [] and _alices(world, h, "before") == []


def test_without_the_guard_the_rmdir_detaches_the_home_everywhere(world: World) -> None:
    """The attack itself, on the model: what the guard prevents (a planted mount point
    without one, as before the fix)."""
    host = world.host
    h = world.login("alice")
    world.logout("alice")
    with world.in_namespace(world.namespace):
        host.new_namespace("before", "private")
    world.login("alice", first_user=True)
    with world.in_namespace("before"):
        path = paths.home_chronos(h)
        host.unlink(f"{path}/{GUARD_NAME}/{MARKER_NAME}", safe=True)  # (root only can)
        host.rmdir(f"{path}/{GUARD_NAME}", safe=True)
        host.rmdir(path, safe=True)  # an empty directory in this namespace
    assert path not in _alices(world, h)  # __detach_mounts(): gone in the root namespace too


def test_a_failed_sign_in_leaves_no_guard() -> None:
    for step in itertools.count():
        world = World.model()
        world.install_daemon("foo", 20100, 20100, 0o700)
        world.run_startup()
        host = world.host
        h = world.hash_of("alice")
        plan = session.plan_sign_in(host, h, first_user=True)
        if step == len(plan.steps):
            break
        with pytest.raises(session.SignInError) as caught:
            plan.apply(host, fail_at=step)
        assert caught.value.rollback == []
        for path in _homes(h):
            assert not host.exists(path), (step, path)
    assert step > 20  # every step of a whole sign-in was tried


def test_repair_removes_a_guard_cut_short_before_its_marker(world: World) -> None:
    host = world.host
    h = world.hash_of("alice")
    plan = session.plan_sign_in(host, h, first_user=True)
    at = plan.steps.index(GuardMountPoint(paths.home_chronos(h)))
    for op in plan.steps[:at]:
        op.apply(host)
    host.mkdir(f"{paths.home_chronos(h)}/{GUARD_NAME}", GUARD_MODE, safe=True)  # killed here
    _plan, report = repair(host)
    assert report.ok
    assert not host.exists(paths.home_chronos(h))
    assert plan_repair(host).empty  # and a second run has nothing to do


def test_a_complete_session_keeps_its_guards_through_repair(world: World) -> None:
    host = world.host
    h = world.hash_of("alice")
    with world.in_namespace(world.namespace):
        host.new_namespace("before", "private")  # shows what is underneath the mounts
    world.login("alice", first_user=True)
    _plan, report = repair(host)
    assert report.ok and plan_repair(host).empty
    with world.in_namespace("before"):
        for path in _homes(h):
            assert is_guard(host, path), path
    assert world.logout("alice").ok


@pytest.mark.parametrize("kind", ["symlink", "file", "chronos-dir-empty", "chronos-dir-full"])
def test_what_chronos_planted_at_the_guard_name_is_dealt_with(world: World, kind: str) -> None:
    host = world.host
    mp = "/home/chronos/u-" + "a" * 40
    host.mkdir("/home/chronos", 0o755, parents=True)
    host.chown("/home/chronos", 1000, 1000)
    host.mkdir(mp, 0o750)
    host.chown(mp, 1000, 1001)
    guard = f"{mp}/{GUARD_NAME}"
    if kind == "symlink":
        host.symlink("/etc", guard)
    elif kind == "file":
        host.write_file(guard, b"x")
        host.chown(guard, 1000, 1000)
    else:
        host.mkdir(guard, 0o777)
        host.chown(guard, 1000, 1000)
        if kind == "chronos-dir-full":
            host.write_file(f"{guard}/mine", b"chronos's")
    GuardMountPoint(mp).apply(host)
    st = host.lstat(guard, safe=True)
    assert st.is_dir and (st.uid, st.gid, st.perm) == (0, 0, GUARD_MODE)
    assert host.listdir(guard, safe=True)  # never empty
    assert host.lstat("/etc", safe=True).is_dir  # nothing followed
    GuardMountPoint(mp).apply(host)  # idempotent
    assert is_guard(host, mp)
    if kind == "chronos-dir-full":  # removed, as ChromeOS removes an unmounted u-<H> whole
        assert not host.exists(f"{guard}/mine")
    RemoveDir(mp).apply(host)
    assert not host.exists(mp)


@pytest.mark.parametrize("lookalike", ["chronos-owned", "extra-entry", "writable"])
def test_a_look_alike_is_never_removed(world: World, lookalike: str) -> None:
    host = world.host
    mp = "/home/chronos/u-" + "b" * 40
    host.mkdir(mp, 0o750, parents=True)
    GuardMountPoint(mp).apply(host)
    guard = f"{mp}/{GUARD_NAME}"
    if lookalike == "chronos-owned":
        host.chown(guard, 1000, 1000)
    elif lookalike == "extra-entry":
        host.write_file(f"{guard}/more", b"")
    else:
        host.chmod(guard, 0o777)
    assert not is_guard(host, mp)
    assert not remove_guard(host, mp)
    with pytest.raises(OSError) as caught:
        RemoveDir(mp).apply(host)
    assert caught.value.errno == errno.ENOTEMPTY
    assert host.exists(guard)
