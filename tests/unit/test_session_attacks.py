"""Attacks on sign-in through the user-controlled vault (docs/chromeos.md §2.5, protection against
symlink and TOCTOU attacks), and templates that change between logins (§7 items 5 and 6).

A symlink, file or fifo where a directory should be refuses that user's sign-in with the path
named: nothing mounted, nothing outside the vault touched, nothing followed, no data lost."""

from __future__ import annotations

import errno

import pytest

from daemonstore import paths, session
from daemonstore.ops import op_path
from daemonstore.world import World

FOO = ("foo", 20100, 20100, 0o700)


def all_mountinfo(world: World) -> dict[str, str]:
    return {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}


@pytest.fixture
def world() -> World:
    """alice signed in once (so her vault holds data) and signed out; a daemon running."""
    w = World.model()
    w.install_daemon(*FOO)
    view = w.daemon("foo")
    w.login("alice")
    view.write("alice", "precious", b"alice's data")
    view.write("alice", "cached", b"cache", cache=True)
    w.host.write_file(f"{paths.vault_mount(w.hash_of('alice'))}/user/Downloads.txt", b"dl")
    w.logout("alice")
    return w


def vault_data(world: World) -> dict[str, bytes]:
    v = paths.vault(world.hash_of("alice"))
    out = {}
    for rel in ("root/foo/precious", "root/.cache/foo/cached", "user/Downloads.txt"):
        try:
            out[rel] = world.host.read_file(f"{v}/{rel}")
        except OSError as exc:
            out[rel] = exc.strerror.encode()
    return out


def plant(world: World, path: str, kind: str, target: str = "/etc") -> None:
    """Replace whatever is at ``path`` (an empty tree is moved aside) with ``kind``."""
    host = world.host
    if host.exists(path):
        aside = path + ".moved-aside"
        _move_tree(world, path, aside)
    if kind == "symlink":
        host.symlink(target, path)
    elif kind == "file":
        host.write_file(path, b"not a directory")
    elif kind == "fifo":
        host.mkfifo(path)
    else:
        raise ValueError(kind)


def _move_tree(world: World, src: str, dst: str) -> None:
    """The model has no rename: copy a small tree of dirs and files, then remove it."""
    host = world.host
    st = host.lstat(src)
    if st.is_dir:
        host.mkdir(dst, st.perm)
        for name in host.listdir(src):
            _move_tree(world, f"{src}/{name}", f"{dst}/{name}")
        host.rmdir(src)
    else:
        host.write_file(dst, host.read_file(src))
        host.unlink(src)


H_PLACES = {
    # where, relative to the user's shadow dir: the vault's backing (the vault is not mounted
    # while signed out, so that is where a user's planted entries sit)
    "root/<d>": "vault/root/foo",
    "root/.cache/<d>": "vault/root/.cache/foo",
    "root": "vault/root",
    "root/.cache": "vault/root/.cache",
    "user": "vault/user",
    "vault mount point": "mount",
    "vault itself": "vault",
}


@pytest.mark.parametrize("kind", ["symlink", "file", "fifo"])
@pytest.mark.parametrize("place", list(H_PLACES), ids=list(H_PLACES))
def test_planted_entry_refuses_sign_in_cleanly(world: World, place: str, kind: str) -> None:
    h = world.hash_of("alice")
    planted = f"{paths.shadow(h)}/{H_PLACES[place]}"
    plant(world, planted, kind, target="/etc/daemon-store/foo")
    before = (all_mountinfo(world), world.snapshot(skip=[paths.shadow(h)]), vault_data(world))
    with pytest.raises(session.SignInError) as info:
        world.login("alice")
    exc = info.value
    assert exc.path == planted and planted in str(exc)
    assert exc.errno == (errno.ELOOP if kind == "symlink" else errno.ENOTDIR)
    assert exc.step is None  # refused at plan time: nothing was done
    assert "symbolic link" in exc.reason if kind == "symlink" else "where a directory" in exc.reason
    assert (all_mountinfo(world), world.snapshot(skip=[paths.shadow(h)]),
            vault_data(world)) == before
    # another user is not affected
    world.login("bob")
    assert world.daemon("foo").sees_store("bob")


def test_symlink_to_outside_is_not_followed_and_etc_is_untouched(world: World) -> None:
    h = world.hash_of("alice")
    etc_before = world.snapshot("/etc")
    for place, target in (("vault/root/foo", "/etc"), ("vault/root/.cache/foo", "/etc/passwd"),
                          ("vault/root", "/etc/daemon-store")):
        plant(world, f"{paths.shadow(h)}/{place}", "symlink", target=target)
        with pytest.raises(session.SignInError):
            world.login("alice")
        assert world.snapshot("/etc") == etc_before
        world.host.unlink(f"{paths.shadow(h)}/{place}")
        _move_tree(world, f"{paths.shadow(h)}/{place}.moved-aside", f"{paths.shadow(h)}/{place}")
    world.login("alice")  # with the vault repaired she signs in again, data intact
    assert world.daemon("foo").read("alice", "precious") == b"alice's data"


def test_symlink_planted_between_plan_and_apply_fails_at_that_step(world: World) -> None:
    """TOCTOU: the plan saw a directory; the step meets a symlink (safe=True: ELOOP)."""
    h = world.hash_of("alice")
    plan = session.plan_sign_in(world.host, h)
    before = (all_mountinfo(world), world.snapshot(skip=[paths.shadow(h)]))
    planted = f"{paths.vault(h)}/root/foo"
    plant(world, planted, "symlink", target="/etc")
    with pytest.raises(session.SignInError) as info:
        plan.apply(world.host)
    exc = info.value
    assert exc.errno == errno.ELOOP and exc.step is not None and exc.rollback == []
    # the step names the mounted path the symlink was met at
    assert exc.path == f"{paths.vault_mount(h)}/root/foo"
    assert "rolled back" in exc.reason and plan.steps[exc.step].to_line() in exc.reason
    world.host.unlink(planted)
    assert (all_mountinfo(world), world.snapshot(skip=[paths.shadow(h)])) == before


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_file_planted_between_plan_and_apply_is_not_mounted(world: World, kind: str) -> None:
    h = world.hash_of("alice")
    plan = session.plan_sign_in(world.host, h)
    before = all_mountinfo(world)
    plant(world, f"{paths.vault(h)}/root/.cache/foo", kind)
    with pytest.raises(session.SignInError) as info:
        plan.apply(world.host)
    assert info.value.errno == errno.ENOTDIR
    assert all_mountinfo(world) == before


def test_symlinked_target_in_the_store_is_refused(world: World) -> None:
    h = world.hash_of("alice")
    world.host.rmdir(paths.user_store("foo", h))  # the empty target the sign-out left...
    world.host.symlink("/etc", paths.user_store("foo", h))  # ...swapped for a symlink
    with pytest.raises(session.SignInError) as info:
        world.login("alice")
    assert info.value.path == paths.user_store("foo", h)


def test_stale_mount_on_a_target_is_refused(world: World) -> None:
    h = world.hash_of("alice")
    world.host.mount_tmpfs("stale", paths.user_store("foo", h))  # on the target left behind
    with pytest.raises(session.SignInError) as info:
        world.login("alice")
    assert info.value.errno == errno.EBUSY and "already a mount point" in str(info.value)


def test_leftover_empty_target_is_reused_and_left_again(world: World) -> None:
    h = world.hash_of("alice")
    target = paths.user_store("foo", h)
    assert world.host.listdir(target) == []  # what sign-out leaves, as the original
    first = [op.to_line() for op in session.plan_sign_in(world.host, h).steps
             if op_path(op) == target][0]
    assert first == f"mount --bind {paths.vault_mount(h)}/root/foo {target}"  # no mkdir
    world.login("alice")
    assert world.daemon("foo").sees_store("alice")
    out = world.logout("alice")
    assert target not in out.removed_dirs and world.host.listdir(target) == []
    out = world.logout("alice", remove_store_targets=True)  # the tidy option
    assert target in out.removed_dirs and not world.host.exists(target)


# ---- templates changing between logins ---------------------------------------------------


def test_template_mode_and_owner_changes_are_reapplied(world: World) -> None:
    view = world.daemon("foo")
    world.host.chown(paths.template("foo"), 20111, 20112)
    world.host.chmod(paths.template("foo"), 0o750)
    world.login("alice")
    for cache in (False, True):
        st = view.stat("alice", cache=cache)
        assert (st.perm, st.uid, st.gid) == (0o750, 20111, 20112)  # owner too, unlike ChromeOS
    assert view.read("alice", "precious") == b"alice's data"


def test_template_change_plans_only_what_differs(world: World) -> None:
    h = world.hash_of("alice")
    assert not [op for op in session.plan_sign_in(world.host, h).steps
                if "/root/foo" in op.to_line() and op.to_line().startswith(("chown", "chmod"))]
    world.host.chmod(paths.template("foo"), 0o2750)
    lines = [op.to_line() for op in session.plan_sign_in(world.host, h).steps]
    assert f"chmod 2750 {paths.vault_mount(h)}/root/foo" in lines
    assert f"chmod 2750 {paths.vault_mount(h)}/root/.cache/foo" in lines
    assert not [ln for ln in lines if ln.startswith("chown") and "/root/foo" in ln]


def test_permission_drift_by_the_daemon_is_repaired(world: World) -> None:
    """docs/chromeos.md §7 item 5: a daemon chmods its own directory; the next sign-in
    puts the template's mode back (instead of failing the login, b98321b6f7)."""
    view = world.daemon("foo")
    world.login("alice")
    with world.in_namespace(view.namespace):
        world.host.chmod(view.path("alice"), 0o777)
        world.host.chown(view.path("alice"), 0, 0)
    world.logout("alice")
    world.login("alice")
    st = view.stat("alice")
    assert (st.perm, st.uid, st.gid) == (0o700, 20100, 20100)


def test_tampered_vault_directory_modes_are_repaired(world: World) -> None:
    h = world.hash_of("alice")
    world.host.chmod(f"{paths.vault(h)}/root", 0o777)
    world.host.chown(f"{paths.vault(h)}/user", 0, 0)
    world.login("alice")
    root = world.host.stat(f"{paths.vault_mount(h)}/root")
    user = world.host.stat(f"{paths.vault_mount(h)}/user")
    assert (root.perm, root.uid, root.gid) == (0o1770, 0, 400)
    assert (user.perm, user.uid, user.gid) == (0o750, 1000, 1001)
