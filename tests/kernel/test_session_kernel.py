"""Sign-in / sign-out on the real kernel: the end-to-end story, a store busy at sign-out (the lazy
detach the model cannot show), a failure at every step, attacks, and model == kernel.

Every body runs in run_in_sandbox's forked child (a private mount namespace on a tmpfs sandbox):
the first tests take the plugin's ``daemonstore_world`` (``pytestmark`` ``kernel`` selects the
kernel, and the plugin runs the whole test function in the child), the others pass a body to
``daemonstore.world.kernel_world``; assertions inside a body re-raise here."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.world import World, kernel_world

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)
DAEMONS = [FOO, ("bar", 20101, 20102, 0o750), ("baz", 20103, 20103, 0o700)]
USER_HASH = "0123456789abcdef0123456789abcdef01234567"


def at(text: str, mount_point: str) -> list[mountinfo.MountInfoEntry]:
    return [e for e in mountinfo.parse(text) if e.mount_point == mount_point]


def all_mountinfo(world: World) -> dict[str, str]:
    return {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}


# ---- the story ---------------------------------------------------------------------------------


@pytest.mark.daemonstore(daemons=DAEMONS)
def test_daemon_sees_its_store_after_sign_in_and_loses_it_after_sign_out(
        daemonstore_world: World) -> None:
    # written like a model test: the plugin runs the whole function in the sandbox child
    # (pytestmark ``kernel`` selects the kernel world), assertions and all
    world = daemonstore_world
    assert world.kind == "kernel"
    view = world.daemon("foo")  # cloned before sign-in, slave propagation
    h = world.login("alice")
    target = paths.user_store("foo", h)
    assert (view.sees_store("alice"), view.sees_store("alice", cache=True)) == (True, True)
    st = view.stat("alice")
    assert (st.uid, st.gid, st.perm) == (20100, 20100, 0o700)
    options = at(world.mountinfo(), target)[0].options
    assert {"nosuid", "nodev", "noexec", "nosymfollow"} <= set(options)
    view.write("alice", "state.json", b"v1")
    assert world.read_vault("alice", "foo", "state.json") == b"v1"
    signout = world.logout("alice")
    assert signout.ok and signout.lazily_detached == []
    assert at(view.mountinfo(), target) == [] and at(world.mountinfo(), target) == []
    # the empty target stays, as on ChromeOS (docs/chromeos.md §7 item 1)
    assert not view.sees_store("alice") and view.listdir() == [h]
    world.login("alice")
    assert view.read("alice", "state.json") == b"v1"


@pytest.mark.daemonstore(daemons=[FOO])
def test_two_users_at_once(daemonstore_world: World) -> None:
    world = daemonstore_world
    view = world.daemon("foo")
    a = world.login("alice")
    b = world.login("bob")
    assert sorted(view.visible_users()) == sorted([a, b])
    assert session.mounted_users(world.host) == [a, b]
    legacy = at(world.mountinfo(), paths.HOME_CHRONOS_USER)[0].root
    assert legacy == f"{paths.vault(a)}/user"
    world.logout("alice")
    assert view.visible_users() == [b]


def test_setgid_and_sticky_template_mode_is_reproduced_exactly(daemonstore_world: World) -> None:
    world = daemonstore_world
    world.install_daemon("fbpreprocessord", 20300, 20301, 0o3770, startup=False)
    world.start_stores("fbpreprocessord")
    view = world.daemon("fbpreprocessord")
    world.login("alice")
    modes = [(st.perm, st.uid, st.gid) for st in (view.stat("alice"),
                                                  view.stat("alice", cache=True))]
    assert modes == [(0o3770, 20300, 20301)] * 2


# ---- busy at sign-out ---------------------------------------------------------------------------


def _busy(world: World, in_daemon_namespace: bool) -> dict[str, Any]:
    view = world.daemon("foo")
    h = world.login("alice")
    view.write("alice", "held-open", b"still readable")
    target = paths.user_store("foo", h)
    ns = view.namespace if in_daemon_namespace else world.namespace
    with world.in_namespace(ns):
        # an ordinary open(2) through the host path of the sandbox, as a daemon would hold it
        fd = os.open(f"{world.host.root}{target}/held-open", os.O_RDONLY)  # type: ignore[attr-defined]
    try:
        result = world.logout("alice")
        gone = (at(world.mountinfo(), target), at(view.mountinfo(), target))
        data = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    return {"result": result, "gone": gone, "data": data, "target": target,
            "mounted": session.mounted_users(world.host), "left": world.host.listdir(target)}


@pytest.mark.parametrize("where", ["root-namespace", "daemon-namespace"])
def test_busy_store_at_sign_out_is_lazily_detached(where: str) -> None:
    out = kernel_world(_busy, where == "daemon-namespace", daemons=[FOO])
    result = out["result"]
    assert result.lazily_detached == [out["target"]], result.warnings
    assert out["target"] not in result.unmounted and result.ok
    assert any("lazily detached" in w and out["target"] in w for w in result.warnings)
    assert out["gone"] == ([], [])  # gone from mountinfo in both namespaces
    assert out["data"] == b"still readable"  # the holder keeps its file
    assert out["mounted"] == [] and out["left"] == []  # the target stays, empty


def _late(world: World) -> dict[str, Any]:
    """A namespace cloned with slave propagation *after* sign-in (a daemon restarted
    mid-session), holding a file open in its copy of the vault."""
    h = world.login("alice")
    world.host.use_namespace(world.namespace)
    world.host.new_namespace("late", "slave")
    world.host.use_namespace(world.namespace)

    def mine(ns: str) -> list[str]:
        return sorted(e.mount_point for e in mountinfo.parse(world.host.mountinfo(ns))
                      if h in e.root or h in e.mount_point)

    before = mine("late")
    with world.in_namespace("late"):
        world.host.write_file(f"{paths.vault_mount(h)}/user/note", b"private")
        fd = os.open(f"{world.host.root}{paths.vault_mount(h)}/user/note",  # type: ignore[attr-defined]
                     os.O_RDONLY)
    try:
        result = world.logout("alice")
        data = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    return {"hash": h, "before": before, "after": mine("late"), "result": result, "data": data}


def test_a_namespace_made_mid_session_keeps_nothing_of_the_user_after_sign_out() -> None:
    out = kernel_world(_late, daemons=[FOO])
    h = out["hash"]
    assert paths.vault_mount(h) in out["before"] and paths.HOME_CHRONOS_USER in out["before"]
    assert out["after"] == []  # detached by the rmdir of their mount points, even while busy
    assert out["result"].ok, out["result"].warnings
    assert paths.vault_mount(h) in out["result"].removed_dirs
    assert out["data"] == b"private"  # the holder keeps its open file (a lazy detach)


# ---- faults and attacks -------------------------------------------------------------------------


def _fail_everywhere(world: World, user: str, fail_at: int) -> list[str]:
    h = world.hash_of(user)
    before = all_mountinfo(world), world.snapshot(skip=[paths.shadow(h)])
    problems = []
    try:
        world.login(user, fail_at=fail_at)
    except session.SignInError as exc:
        if (exc.errno, exc.step, exc.rollback) != (errno.EIO, fail_at, []):
            problems.append(f"{user} step {fail_at}: {exc!r}")
    else:
        problems.append(f"{user} step {fail_at}: no failure")
    if (all_mountinfo(world), world.snapshot(skip=[paths.shadow(h)])) != before:
        problems.append(f"{user} step {fail_at}: state changed")
    return problems


def _every_step(world: World) -> tuple[int, int, list[str]]:
    world.daemon("foo")
    world.daemon("bar")
    # a brand-new user each time (every directory still to be created) ...
    n_new = len(session.plan_sign_in(world.host, world.hash_of("new0")).steps)
    problems = []
    for fail_at in range(n_new):
        problems += _fail_everywhere(world, f"new{fail_at}", fail_at)
    # ... and a returning user with data, while another user is signed in
    world.login("alice")
    world.logout("alice")
    world.login("carol")
    n_old = len(session.plan_sign_in(world.host, world.hash_of("alice")).steps)
    for fail_at in range(n_old):
        problems += _fail_everywhere(world, "alice", fail_at)
    world.login("alice")  # nothing left behind blocks the real sign-in
    return n_new, n_old, problems


def test_failure_before_every_step_rolls_back_on_the_kernel() -> None:
    n_new, n_old, problems = kernel_world(_every_step, daemons=DAEMONS)
    # the returning user's targets exist already (sign-out leaves them): fewer steps
    assert n_new > 90 and n_old > 30 and problems == []


def _attacks(world: World) -> list[tuple[str, str, int | None, bool]]:
    view = world.daemon("foo")
    h = world.login("alice")
    view.write("alice", "precious", b"data")
    world.logout("alice")
    etc = world.snapshot("/etc")
    base = paths.vault(h)
    results = []
    for rel, kind in (("root/foo", "symlink"), ("root/.cache/foo", "fifo"), ("root", "symlink"),
                      ("user", "file")):
        path = f"{base}/{rel}"
        os.rename(f"{world.host.root}{path}", f"{world.host.root}{path}.aside")  # type: ignore[attr-defined]
        if kind == "symlink":
            world.host.symlink("/etc", path)
        elif kind == "fifo":
            world.host.mkfifo(path)
        else:
            world.host.write_file(path, b"x")
        before = all_mountinfo(world)
        try:
            world.login("alice")
        except session.SignInError as exc:
            results.append((rel, exc.path, exc.errno, all_mountinfo(world) == before))
        else:
            results.append((rel, "signed in", None, False))
        world.host.unlink(path)
        os.rename(f"{world.host.root}{path}.aside", f"{world.host.root}{path}")  # type: ignore[attr-defined]
    assert world.snapshot("/etc") == etc
    world.login("alice")
    assert view.read("alice", "precious") == b"data"
    return results


def test_planted_entries_in_the_vault_refuse_sign_in_without_following() -> None:
    results = kernel_world(_attacks, daemons=[FOO])
    for rel, path, err, unchanged in results:
        assert path.endswith(f"/vault/{rel}"), (rel, path)
        assert err in (errno.ELOOP, errno.ENOTDIR) and unchanged, rel


# ---- model == kernel ----------------------------------------------------------------------------


def _signed_in(world: World) -> dict[str, Any]:
    for spec in DAEMONS:
        world.install_daemon(*spec)
    world.daemon("foo")
    world.login(USER_HASH)
    world.login("f" * 40)
    mid = all_mountinfo(world)
    world.logout(USER_HASH)
    return {"mid": mid, "end": all_mountinfo(world)}


def test_model_and_kernel_end_in_the_same_mount_tables() -> None:
    model = _signed_in(World.model())
    kernel = kernel_world(_signed_in)
    for phase in ("mid", "end"):
        got, want = mountinfo.canonical(kernel[phase]), mountinfo.canonical(model[phase])
        assert mountinfo.canonical_diff(want, got) == [], phase
