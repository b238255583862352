"""Sign-in / sign-out on the model: the end-to-end story a daemon lives through, the mounts and
modes cryptohome makes (docs/chromeos.md §2), several users, sign-out and the pure plans."""

from __future__ import annotations

import errno
import pickle

import pytest

from daemonstore import paths, session
from daemonstore.mountinfo import MountInfoEntry, parse
from daemonstore.ops import ForceUmount, parse_line
from daemonstore.world import World

FOO = ("foo", 20100, 20100, 0o700)
BAR = ("bar", 20101, 20102, 0o750)
STORE_FLAGS = {"nosuid", "nodev", "noexec", "nosymfollow"}


def make_world(*daemons: tuple[str, int, int, int]) -> World:
    world = World.model()
    for spec in daemons or (FOO,):
        world.install_daemon(*spec)
    return world


def at(text: str, mount_point: str) -> list[MountInfoEntry]:
    return [e for e in parse(text) if e.mount_point == mount_point]


def all_mountinfo(world: World) -> dict[str, str]:
    return {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}


# ---- the story -----------------------------------------------------------------------------


def test_daemon_sees_its_store_after_sign_in_and_loses_it_after_sign_out() -> None:
    world = make_world(FOO, BAR)
    view = world.daemon("foo")  # the daemon starts at boot, before anyone signs in
    h = world.login("alice")
    target = paths.user_store("foo", h)

    # the daemon's namespace received the mount (slave of the root namespace's store)
    (store,) = [e for e in at(view.mountinfo(), "/run/daemon-store/foo")
                if e.parent_id == at(view.mountinfo(), "/run")[-1].mount_id]
    mine = [e for e in at(view.mountinfo(), target) if e.parent_id == store.mount_id]
    assert len(mine) == 1 and mine[0].master is not None
    assert view.sees_store("alice") and view.sees_store("alice", cache=True)
    # owner and mode copied from the template
    st = view.stat("alice")
    assert (st.uid, st.gid, st.perm) == (20100, 20100, 0o700)
    # and it can reach only its own stores (-k of /run/daemon-store/foo only)
    with world.in_namespace(view.namespace):
        assert world.host.listdir("/run") == ["daemon-store", "daemon-store-cache"]
        assert world.host.listdir("/run/daemon-store") == ["foo"]

    view.write("alice", "state.json", b'{"n": 1}')
    assert world.read_vault("alice", "foo", "state.json") == b'{"n": 1}'
    assert world.host.read_file(f"{paths.vault(h)}/root/foo/state.json") == b'{"n": 1}'

    result = world.logout("alice")
    assert result.ok and not result.lazily_detached
    assert at(view.mountinfo(), target) == []
    assert at(world.mountinfo(), target) == []
    assert not view.sees_store("alice")
    # the empty target stays, as on ChromeOS (docs/chromeos.md §7 item 1): nothing of alice
    assert view.listdir() == [h] and view.listdir("alice") == []
    assert world.read_vault("alice", "foo", "state.json") == b'{"n": 1}'  # data stays

    world.login("alice")
    assert view.read("alice", "state.json") == b'{"n": 1}'


def test_daemon_started_after_sign_in_sees_the_store_through_its_recursive_bind() -> None:
    world = make_world()
    world.login("alice")
    view = world.daemon("foo")
    assert view.sees_store("alice")
    world.logout("alice")
    assert not view.sees_store("alice")


def test_mounts_flags_and_propagation_as_cryptohome_makes_them() -> None:
    world = make_world()
    h = world.login("alice")
    info = world.mountinfo()
    vm = paths.vault_mount(h)
    (vault,) = at(info, vm)
    assert vault.root == paths.vault(h) and set(vault.options) >= STORE_FLAGS
    (user_home,) = at(info, f"{vm}/user")
    (root_home,) = at(info, f"{vm}/root")
    assert user_home.shared is not None and root_home.shared is not None  # self-bound, shared
    for path, master in ((paths.HOME_CHRONOS_USER, user_home), (paths.home_chronos(h), user_home),
                         (paths.home_user(h), user_home), (paths.home_root(h), root_home)):
        (e,) = at(info, path)
        assert (e.propagation, e.master) == ("slave", master.shared), path
        assert set(e.options) >= STORE_FLAGS
    for cache in (False, True):
        (e,) = at(info, paths.user_store("foo", h, cache))
        assert e.root == f"{paths.vault(h)}/root{'/.cache' if cache else ''}/foo"
        assert set(e.options) >= STORE_FLAGS
        # propagation left to the kernel: the bind of root/foo joins root/'s peer group
        assert e.shared == root_home.shared
    assert session.mounted_users(world.host) == [h]
    assert world.sessions["alice"].mounted[0] == vm


def test_vault_and_home_directories_have_chromeos_modes_and_owners() -> None:
    world = make_world()
    h = world.login("alice")
    host = world.host
    vm = paths.vault_mount(h)
    want = {
        f"{vm}/root": (0o1770, 0, 400),
        f"{vm}/root/.cache": (0o770, 0, 400),
        f"{vm}/user": (0o750, 1000, 1001),
        f"{vm}/root/foo": (0o700, 20100, 20100),
        f"{vm}/root/.cache/foo": (0o700, 20100, 20100),
    }
    for path, (mode, uid, gid) in want.items():
        st = host.stat(path)
        assert (st.perm, st.uid, st.gid) == (mode, uid, gid), path
    world.logout("alice")
    # mount points, seen with nothing mounted on them yet: sign-in creates them
    plan = session.plan_sign_in(host, h)
    lines = plan.to_lines()
    assert f"mkdir -m 0750 {paths.home_user(h)}" in lines
    assert f"chown 1000:1001 {paths.home_chronos(h)}" in lines
    assert f"mkdir -m 0700 {paths.home_root(h)}" in lines
    # the store target outlived the sign-out (as on ChromeOS), root 0700: reused as it is
    st = host.lstat(paths.user_store("foo", h))
    assert (st.perm, st.uid, st.gid) == (0o700, 0, 0)
    target = paths.user_store("foo", h)
    assert [ln.split()[0] for ln in lines if ln.endswith(target)] == ["mount", "mount"]


def test_two_users_at_once_and_chronos_user_only_for_the_first() -> None:
    world = make_world(FOO, BAR)
    view = world.daemon("foo")
    a = world.login("alice")
    b = world.login("bob")
    assert world.sessions["alice"].first_user and not world.sessions["bob"].first_user
    assert paths.HOME_CHRONOS_USER in world.sessions["alice"].mounted
    assert paths.HOME_CHRONOS_USER not in world.sessions["bob"].mounted
    (legacy,) = at(world.mountinfo(), paths.HOME_CHRONOS_USER)
    assert legacy.root == f"{paths.vault(a)}/user"
    assert session.mounted_users(world.host) == [a, b]
    assert sorted(view.visible_users()) == sorted([a, b])

    view.write("bob", "b.txt", b"bob's")
    view.write("alice", "a.txt", b"alice's")
    assert world.read_vault("bob", "foo", "b.txt") == b"bob's"
    assert not world.host.exists(world.vault_path("alice", "foo", "b.txt"))

    out = world.logout("alice")
    assert paths.HOME_CHRONOS_USER in out.unmounted  # it was alice's
    assert view.visible_users() == [b] and session.mounted_users(world.host) == [b]
    assert at(world.mountinfo(), paths.HOME_CHRONOS_USER) == []
    assert view.read("bob", "b.txt") == b"bob's"
    world.logout("bob")
    assert view.visible_users() == [] and session.mounted_users(world.host) == []


def test_first_user_decision() -> None:
    world = make_world()
    a = world.hash_of("alice")
    assert session.plan_sign_in(world.host, a).first_user
    assert not session.plan_sign_in(world.host, a, first_user=False).first_user
    world.login("alice")
    b = world.hash_of("bob")
    assert not session.plan_sign_in(world.host, b).first_user
    with pytest.raises(session.SignInError) as info:
        session.plan_sign_in(world.host, b, first_user=True)
    assert info.value.errno == errno.EBUSY and info.value.path == paths.HOME_CHRONOS_USER


def test_signing_in_twice_is_refused_and_changes_nothing() -> None:
    world = make_world()
    h = world.login("alice")
    before = all_mountinfo(world)
    with pytest.raises(session.SignInError) as info:
        world.login("alice")
    assert info.value.errno == errno.EBUSY and info.value.path == paths.vault_mount(h)
    assert info.value.step is None and "already signed in" in str(info.value)
    assert all_mountinfo(world) == before


def test_a_store_missing_at_sign_in_is_skipped_with_a_warning() -> None:
    world = make_world(FOO)
    world.install_daemon("late", 20200, 20200, 0o700, startup=False)  # no reboot since
    h = world.login("alice")
    warnings = world.sessions["alice"].warnings
    assert any("/run/daemon-store/late" in w and "not mounted" in w for w in warnings)
    assert any("/run/daemon-store-cache/late" in w for w in warnings)
    assert paths.user_store("foo", h) in world.sessions["alice"].mounted
    world.logout("alice")
    assert world.run_startup() == []  # the next boot creates the store
    world.login("alice")
    assert paths.user_store("late", h) in world.sessions["alice"].mounted
    assert world.sessions["alice"].warnings == []


def test_setgid_and_sticky_template_mode_is_reproduced_exactly() -> None:
    world = make_world()
    # fbpreprocessord's template is 3770 on ChromeOS (docs/chromeos.md §1.6)
    world.install_daemon("fbpreprocessord", 20300, 20301, 0o3770)
    view = world.daemon("fbpreprocessord")
    h = world.login("alice")
    for cache in (False, True):
        st = view.stat("alice", cache=cache)
        assert (st.perm, st.uid, st.gid) == (0o3770, 20300, 20301)
        src = world.host.stat(paths.vault_store(h, "fbpreprocessord", cache))
        assert src.perm == 0o3770
    plan_lines = session.plan_sign_in(world.host, world.hash_of("bob")).to_lines()
    assert any(line.startswith("chmod 3770 ") for line in plan_lines)


def test_world_writable_template_is_skipped() -> None:
    world = make_world()
    world.install_daemon("lax", 20400, 20400, 0o777, startup=False)
    world.start_stores("lax")
    h = world.login("alice")
    assert any("lax" in w and "world-writable" in w for w in world.sessions["alice"].warnings)
    assert paths.user_store("lax", h) not in world.sessions["alice"].mounted


def test_an_unshared_store_still_mounts_but_warns() -> None:
    world = make_world()
    world.host.make("/run/daemon-store/foo", "private")
    h = world.login("alice")
    assert any("not shared" in w for w in world.sessions["alice"].warnings)
    assert paths.user_store("foo", h) in world.sessions["alice"].mounted


# ---- sign-out ------------------------------------------------------------------------------


def test_sign_out_is_lifo_and_leaves_the_empty_targets() -> None:
    world = make_world(FOO, BAR)
    h = world.login("alice")
    mounted = world.sessions["alice"].mounted
    plan = session.plan_sign_out(world.host, h)
    assert plan.signed_in
    out = plan.apply(world.host)
    assert out.unmounted == list(reversed(mounted))
    assert out.failed == [] and out.warnings == []
    for cache in (False, True):
        for d in ("foo", "bar"):
            target = paths.user_store(d, h, cache)  # as cryptohome leaves it (§7 item 1)
            assert target not in out.removed_dirs and world.host.listdir(target) == []
    for home in (paths.home_root(h), paths.home_user(h), paths.home_chronos(h)):
        assert home in out.removed_dirs
    # the mount points that outlive the user's own go too (copies elsewhere are detached);
    # sign-in makes them again
    for point in (paths.vault_mount(h), paths.HOME_CHRONOS_USER):
        assert point in out.removed_dirs and not world.host.exists(point)
    assert session.mounted_users(world.host) == []
    world.login("alice")
    assert world.host.exists(paths.HOME_CHRONOS_USER)


def test_a_daemon_namespace_made_mid_session_keeps_nothing_of_the_user() -> None:
    """``-v -Kslave`` after sign-in copies the private vault bind and the slave
    /home/chronos/user, which no umount propagates to: sign-out's rmdir of their mount points
    detaches the copies in every namespace (the original kills such daemons instead)."""
    world = make_world(FOO)
    h = world.login("alice")
    world.host.use_namespace(world.namespace)
    world.host.new_namespace("late", "slave")
    world.host.use_namespace(world.namespace)
    late = [e.mount_point for e in parse(world.host.mountinfo("late")) if h in e.root
            or h in e.mount_point]
    assert paths.vault_mount(h) in late and paths.HOME_CHRONOS_USER in late
    out = world.logout("alice")
    assert out.ok and not out.lazily_detached
    left = [e.mount_point for e in parse(world.host.mountinfo("late"))
            if h in e.root or h in e.mount_point]
    assert left == []


def test_sign_out_takes_along_what_was_mounted_below_the_users_mounts() -> None:
    world = make_world()
    h = world.login("alice")
    sub = paths.user_store("foo", h) + "/sub"
    world.host.mkdir(sub)
    world.host.mount_tmpfs("extra", sub)
    # it propagated to the peers of the store bind: root/ and its slave /home/root/<H>
    copies = [e.mount_point for e in parse(world.mountinfo()) if e.source == "extra"]
    assert sorted(copies) == sorted([sub, f"{paths.vault_mount(h)}/root/foo/sub",
                                     f"{paths.home_root(h)}/foo/sub"])
    out = world.logout("alice")
    assert out.ok and not out.lazily_detached
    # LIFO: submounts before their parents; unmounting the copy below root/ took its peer at
    # the store along (umount propagation), which sign-out reports instead of failing
    assert out.unmounted[:2] == list(reversed(copies))[:2]
    assert sub not in out.unmounted
    assert any(w.startswith(f"{sub} was already gone") for w in out.warnings)
    assert [e for e in parse(world.mountinfo()) if h in e.mount_point] == []


def test_sign_out_of_a_user_not_signed_in_leaves_targets_unless_asked() -> None:
    world = make_world()
    h = world.hash_of("alice")
    # what the original leaves behind after a sign-out (docs/chromeos.md §7 item 1)
    world.host.mkdir(paths.user_store("foo", h), 0o700)
    plan = session.plan_sign_out(world.host, h)
    assert not plan.signed_in and "not signed in" in plan.warnings[0]
    assert plan.steps == ()
    out = session.plan_sign_out(world.host, h, remove_store_targets=True).apply(world.host)
    assert out.removed_dirs == [paths.user_store("foo", h)] and out.ok


def test_the_tidy_sign_out_leaves_a_non_empty_target_in_place() -> None:
    world = make_world()
    h = world.login("alice")
    world.logout("alice")
    world.host.write_file(paths.user_store("foo", h) + "/written-before-sign-in", b"x")
    out = world.logout("alice", remove_store_targets=True)
    assert any("left /run/daemon-store/foo/" in w for w in out.warnings)
    assert world.host.exists(paths.user_store("foo", h) + "/written-before-sign-in")
    assert paths.user_store("foo", h, True) in out.removed_dirs  # the empty one went


def test_force_umount_falls_back_to_a_lazy_detach_on_ebusy() -> None:
    # the model has no refcounts; a mount with a submount is its EBUSY (umount(2))
    world = make_world()
    host = world.host
    host.mkdir("/busy/sub", parents=True)
    host.mount_tmpfs("busy", "/busy")
    host.mkdir("/busy/sub")
    host.mount_tmpfs("sub", "/busy/sub")
    assert ForceUmount("/busy").unmount(host) is True
    assert at(host.mountinfo(), "/busy") == [] and at(host.mountinfo(), "/busy/sub") == []
    host.mount_tmpfs("quiet", "/busy")
    assert ForceUmount("/busy").unmount(host) is False


# ---- plans, API edges --------------------------------------------------------------------


def test_plans_are_pure_inspection() -> None:
    world = make_world(FOO, BAR)
    world.daemon("foo")
    h = world.hash_of("alice")
    before = (all_mountinfo(world), world.snapshot())
    session.plan_sign_in(world.host, h)
    session.plan_sign_out(world.host, h)
    assert (all_mountinfo(world), world.snapshot()) == before
    world.login("alice")
    before = (all_mountinfo(world), world.snapshot())
    session.plan_sign_out(world.host, h)
    session.plan_sign_in(world.host, world.hash_of("bob"))
    assert (all_mountinfo(world), world.snapshot()) == before


def test_dry_run_lines() -> None:
    world = make_world()
    h = world.hash_of("alice")
    plan = session.plan_sign_in(world.host, h)
    lines = plan.to_lines()
    assert lines[0].startswith(f"# sign-in of {h} (first user): {len(plan.steps)} steps")
    assert lines[1:] == [op.to_line() for op in plan.steps]
    numbered = plan.to_lines(numbered=True)
    assert numbered[1].split(": ", 1)[1] == plan.steps[0].to_line()
    # mount steps are scenario-language lines
    for line in lines:
        if line.startswith(("mount --bind", "mount --make-", "umount")):
            assert parse_line(line) is not None
    world.login("alice")
    for line in session.plan_sign_out(world.host, h).to_lines()[1:]:
        if line.startswith("umount"):
            assert parse_line(line) is not None


def test_bad_arguments() -> None:
    world = make_world()
    with pytest.raises(paths.BadName):
        session.plan_sign_in(world.host, "ALICE")
    with pytest.raises(paths.BadName):
        session.sign_out(world.host, "../x")
    with pytest.raises(ValueError):
        session.sign_in(world.host, world.hash_of("alice"), fail_at=-1)
    assert session.mounted_users(world.host) == []


def test_fail_at_past_the_end_injects_nothing() -> None:
    world = make_world()
    h = world.hash_of("alice")
    n = len(session.plan_sign_in(world.host, h).steps)
    assert session.sign_in(world.host, h, fail_at=n).mounted


def test_sign_in_error_is_an_oserror_that_pickles() -> None:
    exc = session.SignInError("sign-in failed at step 3", "/p", errno.ELOOP, step=3,
                              op="mkdir -m 0700 /p", rollback=["x"])
    assert isinstance(exc, OSError) and exc.errno == errno.ELOOP and exc.filename == "/p"
    again = pickle.loads(pickle.dumps(exc))
    assert (again.reason, again.path, again.errno, again.step, again.op, again.rollback) == \
        (exc.reason, exc.path, exc.errno, exc.step, exc.op, exc.rollback)
    assert str(again) == "sign-in failed at step 3; rollback problems: x"
