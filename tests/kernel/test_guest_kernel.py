"""Guest sessions on the real kernel: mnt_chrome made by a plain unshare and pinned on its file;
binds made inside it reach the root namespace and a daemon's slave namespace through the peer
copies of the stores; data gone at sign-out; rollback at every step; model == kernel.

Every body runs in run_in_sandbox's forked child (``daemonstore.world.kernel_world``)."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.session import guest, mnt_chrome
from daemonstore.world import World, kernel_world

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)
DAEMONS = [FOO, ("bar", 20101, 20102, 0o750)]
GUEST = paths.GUEST_USER
GUEST_HASH = "9" * 40
USER_HASH = "0123456789abcdef0123456789abcdef01234567"


def at(text: str, mount_point: str) -> list[mountinfo.MountInfoEntry]:
    return [e for e in mountinfo.parse(text) if e.mount_point == mount_point]


def all_mountinfo(world: World) -> dict[str, str]:
    return {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}


def points_with(world: World, needle: str) -> dict[str, list[str]]:
    return {ns: [e.mount_point for e in mountinfo.parse(text) if needle in e.mount_point]
            for ns, text in all_mountinfo(world).items()}


# ---- the story ----------------------------------------------------------------------------------


def _story(world: World) -> dict[str, Any]:
    view = world.daemon("foo")  # cloned (slave) before mnt_chrome exists and before the guest
    h = world.login_guest()
    out: dict[str, Any] = {"hash": h, "namespaces": world.host.namespaces()}
    out["pin"] = at(world.mountinfo(), paths.MNT_CHROME)
    out["peers"] = [(at(world.host.mountinfo("init"), s)[0].shared,
                     at(world.host.mountinfo("mnt_chrome"), s)[0].shared)
                    for s in (paths.store("foo"), paths.store("foo", cache=True))]
    out["seen"] = (view.sees_store(GUEST), view.sees_store(GUEST, cache=True))
    st = view.stat(GUEST)
    out["attrs"] = (st.uid, st.gid, st.perm)
    view.write(GUEST, "state", b"guest data")
    with world.in_namespace(world.namespace):  # the root namespace sees the same file
        out["root_reads"] = world.host.read_file(f"{paths.user_store('foo', h)}/state")
    out["during"] = points_with(world, h)
    out["signout"] = world.logout_guest()
    out["after"] = points_with(world, h)
    out["view_after"] = (view.sees_store(GUEST), view.listdir(), view.listdir(GUEST))
    out["exists_after"] = [world.host.exists(p) for p in (
        paths.user_store("foo", h), paths.ephemeral_mount(h), paths.home_root(h))]
    world.login_guest()
    out["second"] = view.listdir(GUEST)  # a new guest starts empty
    world.logout_guest()
    return out


def test_guest_store_propagates_out_of_mnt_chrome_and_is_gone_after_sign_out() -> None:
    out = kernel_world(_story, daemons=DAEMONS)
    h = out["hash"]
    assert out["namespaces"] == ["init", "daemon-foo", "mnt_chrome"]
    (pin,) = out["pin"]
    assert pin.fstype == "nsfs" and {"nosuid", "nodev", "noexec"} <= set(pin.options)
    assert all(a is not None and a == b for a, b in out["peers"])  # plain unshare: peers
    assert out["seen"] == (True, True)
    assert out["attrs"] == (20100, 20100, 0o700)
    assert out["root_reads"] == b"guest data"
    during = out["during"]
    store = paths.user_store("foo", h)
    assert store in during["init"] and store in during["daemon-foo"]
    # the vault and the home binds do not leave mnt_chrome (crbug 1069501)
    assert paths.ephemeral_mount(h) in during["mnt_chrome"]
    assert paths.home_root(h) in during["mnt_chrome"] and paths.home_root(h) not in during["init"]
    result = out["signout"]
    assert result.ok and result.lazily_detached == [] and result.warnings == []
    assert result.unmounted[-1] == paths.ephemeral_mount(h)
    assert out["after"] == {"init": [], "daemon-foo": [], "mnt_chrome": []}
    assert out["view_after"] == (False, [h], [])  # the empty target stays, as on ChromeOS
    assert out["exists_after"] == [True, False, False]  # the target only, empty
    assert out["second"] == []


def _side_by_side(world: World) -> dict[str, Any]:
    view = world.daemon("foo")
    g = world.login_guest()
    a = world.login("alice")
    out = {"both": sorted(view.visible_users()) == sorted([g, a]),
           "mounted": (session.mounted_users(world.host), guest.mounted_guests(world.host)),
           "alice_in_chrome": bool(at(world.host.mountinfo("mnt_chrome"),
                                      paths.user_store("foo", a)))}
    view.write("alice", "a", b"alice's")
    world.logout_guest()
    out["after_guest"] = view.visible_users() == [a] and view.read("alice", "a") == b"alice's"
    world.logout("alice")
    out["after_all"] = view.visible_users()
    return out


def test_a_regular_user_signs_in_while_the_guest_is_signed_in() -> None:
    out = kernel_world(_side_by_side, daemons=[FOO])
    assert out["both"] and out["alice_in_chrome"] and out["after_guest"]
    assert len(out["mounted"][0]) == 1 and len(out["mounted"][1]) == 1
    assert out["after_all"] == []


def _busy(world: World) -> dict[str, Any]:
    view = world.daemon("foo")
    h = world.login_guest()
    view.write(GUEST, "held-open", b"still readable")
    target = paths.user_store("foo", h)
    with world.in_namespace(view.namespace):  # a daemon holds a file open in the guest store
        fd = os.open(f"{world.host.root}{target}/held-open", os.O_RDONLY)  # type: ignore[attr-defined]
    try:
        result = world.logout_guest()
        data = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    return {"result": result, "target": target, "data": data, "after": points_with(world, h)}


def test_a_busy_guest_store_is_lazily_detached_and_still_gone_everywhere() -> None:
    out = kernel_world(_busy, daemons=[FOO])
    result = out["result"]
    assert result.lazily_detached == [out["target"]] and result.ok
    assert out["data"] == b"still readable"
    assert out["after"] == {"init": [], "daemon-foo": [], "mnt_chrome": []}


# ---- failure at every step ----------------------------------------------------------------------


def _every_step(world: World) -> tuple[int, list[str]]:
    world.daemon("foo")
    world.salt  # noqa: B018 - the salt file exists before the snapshots
    mnt_chrome.ensure_chrome_namespace(world.host)
    h = world.hash_of(GUEST)
    count = len(guest.plan_sign_in_guest(world.host, h).steps)
    problems = []
    for fail_at in range(count):
        # (the ns file is skipped: reading an nsfs file is EINVAL)
        before = all_mountinfo(world), world.snapshot(skip=[paths.MNT_CHROME])
        try:
            world.login_guest(fail_at=fail_at)
        except session.SignInError as exc:
            if (exc.errno, exc.step, exc.rollback) != (errno.EIO, fail_at, []):
                problems.append(f"step {fail_at}: {exc!r}")
        else:
            problems.append(f"step {fail_at}: no failure")
        if (all_mountinfo(world), world.snapshot(skip=[paths.MNT_CHROME])) != before:
            problems.append(f"step {fail_at}: state changed")
    world.login_guest()
    world.logout_guest()
    return count, problems


def test_failure_before_every_guest_step_rolls_back_on_the_kernel() -> None:
    count, problems = kernel_world(_every_step, daemons=DAEMONS)
    assert count > 60 and problems == []


# ---- model == kernel ----------------------------------------------------------------------------


def _without_ns_files(namespaces: dict[str, str]) -> dict[str, str]:
    """Drop the nsfs pin: its root names the namespace's inode number, which differs per run."""
    return {ns: "\n".join(line for line in text.splitlines() if " - nsfs " not in line)
            for ns, text in namespaces.items()}


def _guest_and_user(world: World) -> dict[str, Any]:
    for spec in DAEMONS:
        world.install_daemon(*spec)
    world.daemon("foo")
    with world.in_namespace(world.namespace):
        guest.sign_in_guest(world.host, GUEST_HASH)
    world.login(USER_HASH)
    mid = _without_ns_files(all_mountinfo(world))
    with world.in_namespace(world.namespace):
        guest.sign_out_guest(world.host, GUEST_HASH)
    return {"mid": mid, "end": _without_ns_files(all_mountinfo(world))}


def test_model_and_kernel_agree_on_guest_mount_tables() -> None:
    model = _guest_and_user(World.model())
    kernel = kernel_world(_guest_and_user)
    for phase in ("mid", "end"):
        got, want = mountinfo.canonical(kernel[phase]), mountinfo.canonical(model[phase])
        assert mountinfo.canonical_diff(want, got) == [], phase


# ---- mnt_chrome made while a user is signed in --------------------------------------------------


def _late_chrome(world: World) -> dict[str, Any]:
    from daemonstore.kernel import loop as kernel_loop

    view = world.daemon("foo")
    out: dict[str, Any] = {}
    a = world.hash_of("alice")
    try:
        world.login("alice", vault="loop")
        world.login_guest()  # creates mnt_chrome now, copying alice's mounts
        out["in_chrome"] = points_with(world, a)["mnt_chrome"]
        out["sees"] = view.sees_store("alice")
        world.logout("alice")
        out["after"] = points_with(world, a)
        out["devices"] = kernel_loop.loop_devices_of(world.host, paths.vault_image(a))
        world.logout_guest()
    finally:
        with world.in_namespace(world.namespace):
            session.sign_out(world.host, a)
            out["cleared"] = kernel_loop.detach_image(world.host, paths.vault_image(a))
    return out


def test_mnt_chrome_made_late_does_not_keep_a_users_loop_vault_mounted() -> None:
    from daemonstore.kernel import loop as kernel_loop

    if kernel_loop.mkfs_command() is None:
        pytest.skip("needs mkfs.ext4 (Debian: e2fsprogs)")
    out = kernel_world(_late_chrome, daemons=[FOO])
    assert out["sees"]
    assert [p.rsplit("/", 2)[0] for p in out["in_chrome"]] == [
        paths.RUN_DAEMON_STORE, paths.RUN_DAEMON_STORE_CACHE]  # only the (peer) store binds
    assert all(points == [] for points in out["after"].values())
    assert out["devices"] == [] and out["cleared"] == []
