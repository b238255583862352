"""Guest sessions on the model (daemonstore.session.guest): mnt_chrome created like
``brillo::MountNamespace::Create``, the ephemeral vault inside it, the store binds propagating out
through the peer copies, data gone at sign-out, leftovers removed, rollback at every step."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.ops import EnsureDir, RemoveTree
from daemonstore.session import guest, mnt_chrome
from daemonstore.world import World

FOO = ("foo", 20100, 20100, 0o700)
BAR = ("bar", 20101, 20102, 0o750)
GUEST = paths.GUEST_USER


def world_with(*daemons: tuple[str, int, int, int]) -> World:
    world = World.model()
    for spec in daemons:
        world.install_daemon(*spec)
    return world


def at(text: str, mount_point: str) -> list[mountinfo.MountInfoEntry]:
    return [e for e in mountinfo.parse(text) if e.mount_point == mount_point]


def points_with(world: World, needle: str) -> dict[str, list[str]]:
    return {ns: [e.mount_point for e in mountinfo.parse(world.host.mountinfo(ns))
                 if needle in e.mount_point] for ns in world.host.namespaces()}


# ---- mnt_chrome ---------------------------------------------------------------------------------


def test_mnt_chrome_is_a_plain_unshare_pinned_on_its_file() -> None:
    world = world_with(FOO)
    plan = mnt_chrome.plan_chrome_namespace(world.host)
    assert [op.to_line() for op in plan.steps] == [
        "ns mnt_chrome",  # no --propagation: the copies of the shared stores stay peers
        "use init",
        "mkdir -m 0755 /run/namespaces",
        "touch /run/namespaces/mnt_chrome",
        "mount --bind /proc/<pid in mnt_chrome>/ns/mnt /run/namespaces/mnt_chrome",
        "mount -o remount,bind,nodev,noexec,nosuid /run/namespaces/mnt_chrome",
    ]
    assert world.host.namespaces() == ["init"]  # planning created nothing
    assert mnt_chrome.ensure_chrome_namespace(world.host) == "mnt_chrome"
    assert world.host.current_namespace() == "init"
    (pin,) = at(world.host.mountinfo(), paths.MNT_CHROME)
    assert pin.fstype == "nsfs" and {"nosuid", "nodev", "noexec"} <= set(pin.options)
    for store in (paths.store("foo"), paths.store("foo", cache=True)):
        (root_copy,) = at(world.host.mountinfo("init"), store)
        (chrome_copy,) = at(world.host.mountinfo("mnt_chrome"), store)
        assert root_copy.shared is not None and chrome_copy.shared == root_copy.shared  # peers
    # a second call opens the pinned file: same namespace, nothing new
    again = mnt_chrome.plan_chrome_namespace(world.host)
    assert again.existed and again.steps == () and again.name == "mnt_chrome"
    assert mnt_chrome.ensure_chrome_namespace(world.host) == "mnt_chrome"
    assert world.host.namespaces() == ["init", "mnt_chrome"]


def test_an_existing_empty_file_is_pinned_in_place() -> None:
    world = world_with()
    world.host.mkdir("/run/namespaces", 0o755)
    world.host.write_file(paths.MNT_CHROME, b"")
    lines = [op.to_line() for op in mnt_chrome.plan_chrome_namespace(world.host).steps]
    assert not any(line.startswith(("touch", "mkdir")) for line in lines)
    assert mnt_chrome.ensure_chrome_namespace(world.host) == "mnt_chrome"
    assert mnt_chrome.chrome_namespace(world.host) == "mnt_chrome"


@pytest.mark.parametrize("planted", ["symlink", "directory"])
def test_a_symlink_or_directory_at_the_path_is_refused(planted: str) -> None:
    world = world_with()
    world.host.mkdir("/run/namespaces", 0o755)
    if planted == "symlink":
        world.host.symlink("/etc/passwd", paths.MNT_CHROME)
    else:
        world.host.mkdir(paths.MNT_CHROME, 0o755)
    with pytest.raises(session.SignInError) as exc:
        mnt_chrome.ensure_chrome_namespace(world.host)
    assert exc.value.path == paths.MNT_CHROME and exc.value.errno == errno.EINVAL
    assert world.host.namespaces() == ["init"]


def test_a_name_taken_by_an_unpinned_namespace_gets_a_fresh_one() -> None:
    """ui-post-stop unmounts the file; the next session_manager makes a new namespace."""
    world = world_with()
    assert mnt_chrome.ensure_chrome_namespace(world.host) == "mnt_chrome"
    world.host.umount(paths.MNT_CHROME)
    assert mnt_chrome.chrome_namespace(world.host) is None
    assert mnt_chrome.ensure_chrome_namespace(world.host) == "mnt_chrome-2"
    assert mnt_chrome.chrome_namespace(world.host) == "mnt_chrome-2"


# ---- the story ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chrome_first", [False, True], ids=["daemon-first", "chrome-first"])
def test_guest_store_reaches_daemons_and_the_root_namespace_and_is_gone_after(
        chrome_first: bool) -> None:
    world = world_with(FOO, BAR)
    if chrome_first:
        mnt_chrome.ensure_chrome_namespace(world.host)
    view = world.daemon("foo")  # slave clone of the root namespace, before the guest
    h = world.login_guest()
    assert h == paths.sanitize_username(world.salt, GUEST)
    assert view.sees_store(GUEST) and view.sees_store(GUEST, cache=True)
    st = view.stat(GUEST)
    assert (st.uid, st.gid, st.perm) == (20100, 20100, 0o700)  # the template's owner and mode
    view.write(GUEST, "state", b"guest data")
    with world.in_namespace(world.namespace):  # the root namespace sees it too
        assert world.host.read_file(paths.user_store("foo", h) + "/state") == b"guest data"
    # the vault itself and the home binds stay in mnt_chrome (crbug 1069501)
    for ns in ("init", "daemon-foo"):
        assert paths.ephemeral_mount(h) not in points_with(world, h)[ns]
        assert paths.home_root(h) not in points_with(world, h)[ns]
    assert paths.home_root(h) in points_with(world, h)["mnt_chrome"]
    assert guest.mounted_guests(world.host) == [h]
    assert session.mounted_users(world.host) == []  # not a persistent user

    result = world.logout_guest()
    assert result.ok and result.lazily_detached == []
    assert result.unmounted[-1] == paths.ephemeral_mount(h)  # the tmpfs goes last (LIFO)
    assert all(points == [] for points in points_with(world, h).values())
    # the empty targets stay, as after any sign-out on ChromeOS (docs/chromeos.md §7 item 1)
    assert not view.sees_store(GUEST) and view.listdir() == [h] and view.listdir(GUEST) == []
    assert guest.mounted_guests(world.host) == []
    assert world.host.namespaces().count("mnt_chrome") == 1  # the namespace stays
    view.write(GUEST, "late", b"written after sign-out")  # a naive daemon: into /run's tmpfs

    assert world.login_guest() == h  # a new guest session starts empty: the leftover purged
    assert view.listdir(GUEST) == []
    world.logout_guest()
    assert view.listdir(GUEST) == []  # gone for good, not just hidden under the mount


def test_regular_users_and_the_guest_side_by_side() -> None:
    world = world_with(FOO)
    view = world.daemon("foo")
    g = world.login_guest()
    a = world.login("alice")  # in the root namespace, while the guest is signed in
    assert sorted(view.visible_users()) == sorted([g, a])
    assert session.mounted_users(world.host) == [a] and guest.mounted_guests(world.host) == [g]
    # alice's binds, made in the root namespace, reach mnt_chrome through the peers too
    assert at(world.host.mountinfo("mnt_chrome"), paths.user_store("foo", a))
    # each is the first user of its own namespace: /home/chronos/user is per namespace
    (mine,) = at(world.host.mountinfo("mnt_chrome"), paths.HOME_CHRONOS_USER)
    (hers,) = at(world.host.mountinfo("init"), paths.HOME_CHRONOS_USER)
    assert mine.source == guest.EPHEMERAL_SOURCE and hers.root == f"{paths.vault(a)}/user"
    world.logout_guest()
    assert view.visible_users() == [a]
    world.logout("alice")
    assert view.visible_users() == []
    a2 = world.login("alice")
    g2 = world.login_guest()
    world.logout("alice")
    assert view.visible_users() == [g2] and a2 == a
    world.logout_guest()


def test_a_second_guest_sign_in_is_refused() -> None:
    world = world_with(FOO)
    h = world.login_guest()
    before = {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}
    with pytest.raises(session.SignInError) as exc:
        guest.sign_in_guest(world.host, h)
    assert exc.value.errno == errno.EBUSY and "already signed in" in str(exc.value)
    assert {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()} == before


def test_leftovers_of_an_earlier_guest_are_removed_first() -> None:
    """CleanUpGuestDaemonDirectories: whatever daemons wrote under unmounted guest mount points
    never reaches the next guest; a symlink there is removed, its target untouched."""
    world = world_with(FOO)
    h = world.hash_of(GUEST)
    host = world.host
    target = paths.user_store("foo", h)
    host.mkdir(target, 0o700)
    host.write_file(f"{target}/stale", b"old guest data")
    host.mkdir(f"{paths.home_root(h)}/shill", 0o755, parents=True)
    host.write_file(f"{paths.home_root(h)}/shill/profile", b"x")
    host.symlink("/etc/passwd", f"{paths.home_root(h)}/session_manager")
    passwd = host.read_file("/etc/passwd")
    plan = guest.plan_sign_in_guest(host, h)
    removals = [op for op in plan.steps if isinstance(op, RemoveTree)]
    assert [op.path for op in removals] == [paths.home_root(h), target]
    assert all(op.keep_top for op in removals) and plan.steps[:2] == tuple(removals)
    assert sum("leftovers" in w for w in plan.warnings) == 2
    view = world.daemon("foo")
    world.login_guest()
    assert view.listdir(GUEST) == []
    world.logout_guest()
    assert host.listdir(target) == [] and not host.exists(paths.home_root(h))
    assert host.read_file("/etc/passwd") == passwd
    world.logout_guest(remove_store_targets=True)  # not signed in: the tidy option still
    assert not host.exists(target)  # removes what is left


def test_dry_run_is_pure_and_shows_setup_then_numbered_steps() -> None:
    world = world_with(FOO)
    h = world.hash_of(GUEST)
    before = world.snapshot(), world.host.mountinfo(), world.host.namespaces()
    plan = guest.plan_sign_in_guest(world.host, h)
    assert (world.snapshot(), world.host.mountinfo(), world.host.namespaces()) == before
    lines = plan.to_lines(numbered=True)
    assert lines[0] == "# setup, in the current namespace: ns mnt_chrome"
    assert any(line.startswith(f"# guest sign-in of {h} inside mnt_chrome") for line in lines)
    assert any("mount -t tmpfs -o nodev,noexec,nosuid,nosymfollow,mode=0755 ephemeral "
               f"{paths.ephemeral_mount(h)}" in line for line in lines)
    assert f"{len(plan.steps) - 1}: " in lines[-1]


def test_sign_out_of_a_guest_who_is_not_signed_in() -> None:
    world = world_with(FOO)
    h = world.hash_of(GUEST)
    plan = guest.plan_sign_out_guest(world.host, h)  # no mnt_chrome at all
    assert plan.steps == () and plan.namespace == "" and not plan.signed_in
    assert plan.apply(world.host).ok
    mnt_chrome.ensure_chrome_namespace(world.host)
    plan = guest.plan_sign_out_guest(world.host, h)
    assert plan.steps == () and "not signed in" in plan.warnings[0]


# ---- failure at every step ----------------------------------------------------------------------


def _state(world: World) -> tuple[object, ...]:
    host = world.host
    return ({ns: host.mountinfo(ns) for ns in host.namespaces()}, world.snapshot())


def _fresh() -> World:
    world = world_with(FOO, BAR)
    world.daemon("foo")
    world.salt  # noqa: B018 - the salt file exists before the snapshots
    mnt_chrome.ensure_chrome_namespace(world.host)
    return world


def _returning() -> World:
    """A guest signed in and out before (home mount points gone, the empty store targets left
    as on ChromeOS, a leftover written into one after sign-out)."""
    world = _fresh()
    h = world.login_guest()
    world.logout_guest()
    assert world.host.listdir(paths.user_store("bar", h)) == []
    world.host.write_file(paths.user_store("bar", h) + "/junk", b"x")
    return world


WORLDS: dict[str, Callable[[], World]] = {"fresh": _fresh, "returning": _returning}


def _step_count(make: Callable[[], World]) -> int:
    world = make()
    return len(guest.plan_sign_in_guest(world.host, world.hash_of(GUEST)).steps)


CASES = [(name, step) for name, make in WORLDS.items() for step in range(_step_count(make))]


@pytest.mark.parametrize(("name", "fail_at"), CASES, ids=[f"{n}-step{s}" for n, s in CASES])
def test_failure_before_every_step_rolls_back_inside_mnt_chrome(name: str, fail_at: int) -> None:
    world = WORLDS[name]()
    h = world.hash_of(GUEST)
    plan = guest.plan_sign_in_guest(world.host, h)
    removes_leftovers = any(isinstance(op, RemoveTree) for op in plan.steps[:fail_at])
    before = _state(world)
    with pytest.raises(session.SignInError) as exc:
        plan.apply(world.host, fail_at=fail_at)
    assert exc.value.step == fail_at and exc.value.errno == errno.EIO
    assert exc.value.rollback == []
    assert world.host.current_namespace() == "init"
    mounts, files = _state(world)
    assert mounts == before[0]  # every namespace exactly as before
    if not removes_leftovers:
        assert files == before[1]  # and no directory left behind anywhere
    world.login_guest()  # nothing left blocks the real sign-in
    world.logout_guest()


def test_a_failure_after_creating_mnt_chrome_keeps_the_namespace() -> None:
    world = world_with(FOO)
    with pytest.raises(session.SignInError):
        world.login_guest(fail_at=0)
    assert mnt_chrome.chrome_namespace(world.host) == "mnt_chrome"  # session_manager's, not ours
    assert guest.mounted_guests(world.host) == []


# ---- the loop vault is kernel-only --------------------------------------------------------------


def test_the_loop_vault_is_refused_on_the_model_before_anything_changes() -> None:
    world = world_with(FOO)
    h = world.hash_of("alice")
    before = world.snapshot()
    with pytest.raises(session.SignInError) as exc:
        session.plan_sign_in(world.host, h, vault="loop")
    assert exc.value.errno == errno.EOPNOTSUPP
    assert "needs the kernel backend" in str(exc.value) and exc.value.path.endswith("vault.img")
    assert world.snapshot() == before
    with pytest.raises(ValueError, match="vault must be one of dir, loop"):
        session.plan_sign_in(world.host, h, vault="ext4")


# ---- the steps guest and loop vault add to session_ops ------------------------------------------


def test_remove_tree_never_crosses_a_mount_and_never_follows_a_symlink() -> None:
    world = world_with()
    host = world.host
    host.mkdir("/data/a/b", 0o755, parents=True)
    host.write_file("/data/a/b/f", b"x")
    host.symlink("/etc", "/data/a/etc-link")
    host.mkdir("/data/m", 0o755)
    host.mount_tmpfs("live", "/data/m")
    host.write_file("/data/m/keep", b"live data")
    with pytest.raises(OSError) as exc:
        RemoveTree("/data").apply(host)
    assert exc.value.errno == errno.EBUSY and exc.value.filename == "/data/m"
    assert host.read_file("/data/m/keep") == b"live data" and host.exists("/etc")
    with pytest.raises(OSError) as exc:
        RemoveTree("/data/m").apply(host)  # the top itself is a mount point
    assert exc.value.errno == errno.EBUSY
    host.umount("/data/m")
    RemoveTree("/data", keep_top=True).apply(host)
    assert host.listdir("/data") == [] and host.exists("/etc")
    RemoveTree("/data").apply(host)
    assert not host.exists("/data")


def test_ensure_dir_creates_repairs_and_refuses() -> None:
    world = world_with()
    host = world.host
    op = EnsureDir("/v/d", 0o2770, 20100, 400)
    host.mkdir("/v", 0o755)
    op.apply(host)
    st = host.lstat("/v/d")
    assert (st.perm, st.uid, st.gid) == (0o2770, 20100, 400)
    host.chown("/v/d", 0, 0)
    host.chmod("/v/d", 0o777)
    op.apply(host)
    st = host.lstat("/v/d")
    assert (st.perm, st.uid, st.gid) == (0o2770, 20100, 400)
    host.rmdir("/v/d")
    host.symlink("/etc", "/v/d")
    with pytest.raises(OSError) as exc:
        op.apply(host)
    assert exc.value.errno == errno.ELOOP
    host.unlink("/v/d")
    host.write_file("/v/d", b"")
    with pytest.raises(OSError) as exc:
        op.apply(host)
    assert exc.value.errno == errno.ENOTDIR
    assert op.to_line().startswith("install -d -m 2770 -o 20100 -g 400 /v/d")


def test_mnt_chrome_made_while_a_user_is_signed_in_keeps_no_copy_of_her_vault() -> None:
    """session_manager makes mnt_chrome before anyone signs in; made later, the unshare copies
    alice's vault and home binds, whose private parents would keep them after her sign-out.
    The copies are detached inside the new namespace at once (mnt_chrome.DetachCopy)."""
    world = world_with(FOO)
    view = world.daemon("foo")
    a = world.login("alice")
    plan = mnt_chrome.plan_chrome_namespace(world.host)
    detached = [op.to_line().split("  #")[0] for op in plan.steps if "umount -l" in op.to_line()]
    assert detached == [f"umount -l {p}" for p in (
        paths.home_root(a), paths.home_user(a), paths.home_chronos(a), paths.HOME_CHRONOS_USER,
        paths.vault_mount(a))]
    init_before = world.host.mountinfo("init")
    world.login_guest()
    chrome = points_with(world, a)["mnt_chrome"]
    assert chrome == [paths.user_store("foo", a), paths.user_store("foo", a, cache=True)]
    # nothing of hers was unmounted in init (the detaches did not propagate back)
    assert [e for e in mountinfo.parse(world.host.mountinfo("init")) if e.fstype != "nsfs"
            and guest.EPHEMERAL_SOURCE not in e.source] == mountinfo.parse(init_before)
    assert view.sees_store("alice")
    world.logout("alice")
    assert points_with(world, a) == {ns: [] for ns in world.host.namespaces()}
    world.logout_guest()
