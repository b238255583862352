"""``--vault loop`` on the real kernel: each user's vault an ext4 image on a loop device, found
through a pyudev monitor of kernel uevents, detached at sign-out, data kept in the image.

Loop devices are global: every body releases what it attached in a ``finally`` (sign-out, then
``detach_image``, which only clears a device whose backing file is this sandbox's image), and
the images live in the sandbox tmpfs."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.kernel import loop as kernel_loop
from daemonstore.session import loop_vault
from daemonstore.world import World, kernel_world

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)



def loop_vault_missing() -> str | None:
    """Why a loop vault cannot be tried here (None: it can)."""
    if kernel_loop.mkfs_command() is None:
        return "needs mkfs.ext4 (Debian package e2fsprogs)"
    if not os.path.exists(kernel_loop.LOOP_CONTROL):
        return f"needs {kernel_loop.LOOP_CONTROL} (the loop driver)"
    return None


@pytest.fixture(autouse=True)
def _loop_vault_possible() -> None:
    """Skip with the reason -- or fail under CI, which promises a capable machine (as
    tests/kernel/conftest.py does for root)."""
    reason = loop_vault_missing()
    if reason is not None:
        if "CI" in os.environ:
            pytest.fail(f"CI is set, so loop vault tests must run: {reason}", pytrace=False)
        pytest.skip(reason)


def at(text: str, mount_point: str) -> list[mountinfo.MountInfoEntry]:
    return [e for e in mountinfo.parse(text) if e.mount_point == mount_point]


def _release(world: World, *users: str) -> list[str]:
    """Best-effort clean-up for a body's ``finally``: sign the users out and clear any loop
    device still bound to their images. Returns what had to be cleared here (should be [])."""
    cleared = []
    for user in users:
        h = world.hash_of(user)
        with world.in_namespace(world.namespace):
            session.sign_out(world.host, h)
            if world.host.exists(paths.vault_image(h)):
                cleared += kernel_loop.detach_image(world.host, paths.vault_image(h))
    return cleared


def _loop_bound(number: int) -> bool:
    return os.path.exists(f"/sys/block/loop{number}/loop/backing_file")


# ---- the round trip -----------------------------------------------------------------------------


def _round_trip(world: World) -> dict[str, Any]:
    view = world.daemon("foo")
    out: dict[str, Any] = {}
    try:
        h = world.login("alice", vault="loop")
        image = paths.vault_image(h)
        (vault,) = at(world.mountinfo(), paths.vault_mount(h))
        out["vault"] = (vault.fstype, vault.source, set(vault.options), vault.super_options)
        number = int(vault.source[len("/dev/loop"):])
        out["bound_during"] = (_loop_bound(number), kernel_loop.loop_devices_of(world.host, image))
        out["seen"] = view.sees_store("alice") and view.sees_store("alice", cache=True)
        st = view.stat("alice")
        out["attrs"] = (st.uid, st.gid, st.perm)
        view.write("alice", "state.json", b"kept in the image")
        out["signout"] = world.logout("alice")
        # LOOP_CLR_FD (and the autoclear) unbound the device: its loop/ sysfs group is gone
        out["bound_after"] = (_loop_bound(number), kernel_loop.loop_devices_of(world.host, image))
        out["after"] = (at(world.mountinfo(), paths.vault_mount(h)), view.visible_users())
        host_st = os.stat(f"{world.host.root}{image}")  # type: ignore[attr-defined]
        out["image"] = (host_st.st_size, host_st.st_blocks * 512)
        world.login("alice", vault="loop")
        out["again"] = view.read("alice", "state.json")
        world.logout("alice")
    finally:
        out["cleared_in_finally"] = _release(world, "alice")
    return out


def test_data_survives_in_the_image_and_the_loop_device_is_detached_at_sign_out() -> None:
    out = kernel_world(_round_trip, daemons=[FOO])
    fstype, source, options, super_options = out["vault"]
    assert fstype == "ext4" and source.startswith("/dev/loop")
    assert {"nosuid", "nodev", "noexec", "nosymfollow"} <= options
    assert "discard" in super_options
    bound, devices = out["bound_during"]
    assert bound and devices == [int(source[len("/dev/loop"):])]
    assert out["seen"] and out["attrs"] == (20100, 20100, 0o700)
    assert out["signout"].ok and out["signout"].lazily_detached == []
    assert out["bound_after"] == (False, [])
    assert out["after"] == ([], [])
    size, allocated = out["image"]
    assert size == loop_vault.IMAGE_SIZE and allocated < size // 2  # sparse
    assert out["again"] == b"kept in the image"
    assert out["cleared_in_finally"] == []


# ---- the pyudev wait ----------------------------------------------------------------------------


def _attach_directly(world: World) -> dict[str, Any]:
    image = "/vault.img"
    kernel_loop.create_image(world.host, image, loop_vault.IMAGE_SIZE)
    out: dict[str, Any] = {}
    try:
        with kernel_loop.attach(world.host, image) as (loop, fd):
            out["loop"] = loop
            out["bound"] = _loop_bound(loop.number)
            out["fd_is_the_device"] = os.fstat(fd).st_rdev == os.stat(loop.device).st_rdev
        # the block closed our fd: with LO_FLAGS_AUTOCLEAR and nothing mounted, that was the
        # last opener, so the device is free again
        out["bound_after"] = _loop_bound(loop.number)
        try:
            with kernel_loop.attach(world.host, image) as (again, _fd):
                out["second"] = again.number
                raise RuntimeError("a failure inside the block")
        except RuntimeError:
            out["bound_after_failure"] = _loop_bound(out["second"])
    finally:
        out["cleared_in_finally"] = kernel_loop.detach_image(world.host, image)
    return out


def test_the_wait_is_the_kernel_change_uevent_of_that_loop_device() -> None:
    out = kernel_world(_attach_directly)
    loop = out["loop"]
    assert loop.events, "the monitor saw no uevent"
    last = loop.events[-1]
    # LOOP_CONFIGURE ends with kobject_uevent(KOBJ_CHANGE) for the disk: that ended the wait
    assert (last.action, last.sys_name, last.subsystem) == ("change", loop.name, "block")
    assert last.device_node == loop.device and last.seqnum > 0
    assert all(e.sys_name == loop.name for e in loop.events)
    assert out["bound"] and out["fd_is_the_device"]
    assert out["bound_after"] is False
    assert out["bound_after_failure"] is False  # cleared (LOOP_CLR_FD) when the block raised
    assert out["cleared_in_finally"] == []


def _timeout(world: World) -> str:
    monitor = kernel_loop.block_uevent_monitor()
    try:
        kernel_loop.wait_for_change(monitor, "loop-that-never-comes", 0.2)
    except TimeoutError as exc:
        return f"{errno.errorcode[exc.errno or 0]}: {exc.strerror}"
    return "no timeout"


def test_the_wait_times_out_with_a_reason() -> None:
    got = kernel_world(_timeout)
    assert got.startswith("ETIMEDOUT: no change uevent for loop-that-never-comes within 0.2 s")


# ---- failures leave no loop device --------------------------------------------------------------


def _fail_around_the_mount(world: World) -> dict[str, Any]:
    world.daemon("foo")
    h = world.hash_of("alice")
    image = paths.vault_image(h)
    out: dict[str, Any] = {"results": []}
    try:
        world.login("alice", vault="loop")  # the image exists from here on
        world.logout("alice")
        plan = session.plan_sign_in(world.host, h, vault="loop")
        mount_step = next(i for i, op in enumerate(plan.steps)
                          if isinstance(op, loop_vault.MountLoopVault))
        for fail_at in (mount_step, mount_step + 1, len(plan.steps) - 1):
            before = {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}
            try:
                world.login("alice", fail_at=fail_at, vault="loop")
            except session.SignInError as exc:
                after = {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}
                out["results"].append((fail_at, exc.step, exc.rollback, after == before,
                                       kernel_loop.loop_devices_of(world.host, image)))
            else:
                out["results"].append((fail_at, "signed in"))
                world.logout("alice")
        # a vault image that is not ext4 any more: the mount fails, the device is cleared
        with open(f"{world.host.root}{image}", "r+b") as f:  # type: ignore[attr-defined]
            f.write(b"\0" * (4 << 20))
        try:
            world.login("alice", vault="loop")
            out["corrupt"] = "signed in"
        except session.SignInError as exc:
            out["corrupt"] = (exc.op, kernel_loop.loop_devices_of(world.host, image))
    finally:
        out["cleared_in_finally"] = _release(world, "alice")
    return out


def test_a_failed_sign_in_leaves_no_loop_device_attached() -> None:
    out = kernel_world(_fail_around_the_mount, daemons=[FOO])
    assert len(out["results"]) == 3
    for fail_at, step, rollback, unchanged, devices in out["results"]:
        assert (step, rollback, unchanged, devices) == (fail_at, [], True, []), fail_at
    op, devices = out["corrupt"]
    assert op.startswith("mount -t ext4 -o loop,") and devices == []
    assert out["cleared_in_finally"] == []


def _busy(world: World) -> dict[str, Any]:
    view = world.daemon("foo")
    out: dict[str, Any] = {}
    try:
        h = world.login("alice", vault="loop")
        (vault,) = at(world.mountinfo(), paths.vault_mount(h))
        number = int(vault.source[len("/dev/loop"):])
        view.write("alice", "open", b"held")
        with world.in_namespace(view.namespace):
            fd = os.open(f"{world.host.root}{paths.user_store('foo', h)}/open",  # type: ignore[attr-defined]
                         os.O_RDONLY)
        try:
            out["signout"] = world.logout("alice")
            # the lazily detached bind still holds the filesystem, hence the device
            out["bound_while_open"] = _loop_bound(number)
            out["data"] = os.pread(fd, 10, 0)
        finally:
            os.close(fd)
        # the last user went: the autoclear (set at attach, and by LOOP_CLR_FD) detached it
        out["bound_after_close"] = _loop_bound(number)
    finally:
        out["cleared_in_finally"] = _release(world, "alice")
    return out


def test_a_busy_vault_is_detached_when_its_last_user_goes() -> None:
    out = kernel_world(_busy, daemons=[FOO])
    assert out["signout"].ok and out["signout"].lazily_detached
    assert out["bound_while_open"] and out["data"] == b"held"
    assert out["bound_after_close"] is False
    assert out["cleared_in_finally"] == []
