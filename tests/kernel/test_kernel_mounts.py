"""KernelHost mount operations on the real kernel: results in mountinfo and the exact errnos
(docs/propagation.md §2.2-2.7). Every test body runs in a sandbox child."""

from __future__ import annotations

from typing import Any

import pytest

from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.mountinfo import parse
from tests.kernel.util import errname, mount_points, mounts_at

pytestmark = pytest.mark.kernel


def test_sandbox_root_is_a_private_tmpfs_named_sandbox() -> None:
    (root,) = run_in_sandbox(lambda h: parse(h.mountinfo()))
    assert (root.mount_point, root.fstype, root.source, root.propagation) == \
        ("/", "tmpfs", "sandbox", "private")


def test_mount_tmpfs_with_flags_and_data() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.mount_tmpfs("a", "/A", flags=frozenset({"nosuid", "nodev", "ro"}), data="size=1m")
        return mounts_at(h, "/A")

    (a,) = run_in_sandbox(body)
    assert (a.fstype, a.source, a.root) == ("tmpfs", "a", "/")
    assert {"ro", "nosuid", "nodev", "relatime"} <= set(a.options)
    assert "size=1024k" in a.super_options


def test_mount_twice_on_one_directory_stacks() -> None:
    # §2.0: the target is followed to the top of the mount stack
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.mount_tmpfs("low", "/A")
        h.mount_tmpfs("high", "/A")
        return mounts_at(h, "/A")

    low, high = run_in_sandbox(body)
    assert (low.source, high.source) == ("low", "high")
    assert high.parent_id == low.mount_id


def test_mount_tmpfs_errors() -> None:
    def body(h: KernelHost) -> Any:
        h.write_file("/file", b"x")
        return (errname(h.mount_tmpfs, "t", "/missing"),
                errname(h.mount_tmpfs, "t", "/missing/deeper"),
                errname(h.mount_tmpfs, "t", "/file/below"))

    assert run_in_sandbox(body) == ("ENOENT", "ENOENT", "ENOTDIR")


def test_bind_copies_one_mount_rbind_copies_the_tree() -> None:
    # §2.4 (SC11): bind clones only the top mount, rbind its submounts too
    def body(h: KernelHost) -> Any:
        for path in ("/A", "/B", "/C"):
            h.mkdir(path)
        h.mount_tmpfs("a", "/A")
        h.mkdir("/A/sub")
        h.mount_tmpfs("sub", "/A/sub")
        h.bind("/A", "/B")
        h.bind("/A", "/C", recursive=True)
        return mount_points(h)

    assert run_in_sandbox(body) == ["/", "/A", "/A/sub", "/B", "/C", "/C/sub"]


def test_bind_of_a_subdirectory_has_that_root() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.mount_tmpfs("a", "/A")
        h.mkdir("/A/in/deep", parents=True)
        h.mkdir("/B")
        h.bind("/A/in", "/B")
        h.write_file("/B/deep/f", b"through the bind")
        return mounts_at(h, "/B")[0].root, h.read_file("/A/in/deep/f")

    assert run_in_sandbox(body) == ("/in", b"through the bind")


def test_bind_of_an_unbindable_mount_is_einval() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/U")
        h.mkdir("/D")
        h.mount_tmpfs("u", "/U")
        h.make("/U", "unbindable")
        return (errname(h.bind, "/U", "/D"), errname(h.bind, "/U", "/D", recursive=True),
                mount_points(h))

    assert run_in_sandbox(body) == ("EINVAL", "EINVAL", ["/", "/U"])


def test_move_and_its_errnos() -> None:
    # §2.6: source must be a mount root (EINVAL), not under a shared parent (EINVAL), and the
    # destination must not be inside the moved tree (ELOOP, SC21)
    def body(h: KernelHost) -> Any:
        for p in ("/P", "/D", "/M"):
            h.mkdir(p)
        h.mount_tmpfs("m", "/M")
        h.mkdir("/M/sub")
        plain_dir = errname(h.move, "/D", "/M/sub")
        into_itself = errname(h.move, "/M", "/M/sub")
        h.move("/M", "/D")
        h.mount_tmpfs("p", "/P")
        h.make("/P", "shared")
        h.mkdir("/P/c")
        h.mount_tmpfs("c", "/P/c")
        under_shared = errname(h.move, "/P/c", "/M")
        return plain_dir, into_itself, under_shared, mount_points(h)

    assert run_in_sandbox(body) == ("EINVAL", "ELOOP", "EINVAL", ["/", "/D", "/P", "/P/c"])


def test_make_sets_each_propagation_type_and_needs_a_mount_root() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        not_root = errname(h.make, "/A", "shared")
        h.mount_tmpfs("a", "/A")
        h.mkdir("/A/x")
        h.mount_tmpfs("x", "/A/x")
        seen = []
        for kind in ("shared", "slave", "shared", "unbindable", "private"):
            h.make("/A", kind)
            seen.append(mounts_at(h, "/A")[0].propagation)
        h.make("/A", "shared", recursive=True)
        rec = [e.propagation for e in mounts_at(h, "/A") + mounts_at(h, "/A/x")]
        return not_root, errname(h.make, "/A/x/none", "private"), seen, rec

    not_root, missing, seen, rec = run_in_sandbox(body)
    assert (not_root, missing) == ("EINVAL", "ENOENT")
    # make-slave of a lone shared mount has no master to slave to: private (§2.2 table)
    assert seen == ["shared", "private", "shared", "unbindable", "private"]
    assert rec == ["shared", "shared"]


def test_make_rejects_an_unknown_type() -> None:
    def body(h: KernelHost) -> Any:
        with pytest.raises(ValueError, match="unknown propagation"):
            h.make("/", "rshared")

    run_in_sandbox(body)


def test_umount_and_its_errnos() -> None:
    # §2.7: EINVAL off a mount root, EBUSY with a child mount, MNT_DETACH takes the subtree
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.mkdir("/d")
        out = [errname(h.umount, "/d"), errname(h.umount, "/nope")]
        h.mount_tmpfs("a", "/A")
        h.mkdir("/A/x")
        h.mount_tmpfs("x", "/A/x")
        out.append(errname(h.umount, "/A"))
        h.umount("/A", detach=True)
        out.append(mount_points(h))
        h.mount_tmpfs("low", "/A")
        h.mount_tmpfs("high", "/A")
        h.umount("/A")  # the top of the stack goes first
        out.append([e.source for e in mounts_at(h, "/A")])
        return out

    assert run_in_sandbox(body) == ["EINVAL", "ENOENT", "EBUSY", ["/"], ["low"]]


def test_umount_through_a_symlink_unmounts_the_target_inside_the_sandbox() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/real")
        h.mount_tmpfs("r", "/real")
        h.symlink("/real", "/lnk")  # absolute: must mean the sandbox's /real
        h.umount("/lnk")
        return mount_points(h)

    assert run_in_sandbox(body) == ["/"]


def test_remount_bind_replaces_the_per_mount_flags() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.mount_tmpfs("a", "/A")
        h.remount_bind("/A", frozenset({"ro", "nosuid"}))
        ro = mounts_at(h, "/A")[0].options
        blocked = errname(h.write_file, "/A/f", b"x")
        h.remount_bind("/A", frozenset())
        rw = mounts_at(h, "/A")[0].options
        h.write_file("/A/f", b"x")
        return ro, blocked, rw

    ro, blocked, rw = run_in_sandbox(body)
    assert ro == ("ro", "nosuid", "relatime")
    assert blocked == "EROFS"
    assert rw == ("rw", "relatime")


def test_errors_name_the_sandbox_path() -> None:
    # host.py: filename is the sandbox path, never the host path or /proc/self/fd/N
    def body(h: KernelHost) -> Any:
        h.mkdir("/d")
        names = []
        for call, args in ((h.make, ("/d", "shared")), (h.umount, ("/d",)),
                           (h.move, ("/d", "/d")), (h.mount_tmpfs, ("t", "/gone")),
                           (h.read_file, ("/gone",)), (h.mkdir, ("/d",))):
            try:
                call(*args)
            except OSError as exc:
                names.append(exc.filename)
        return names

    assert run_in_sandbox(body) == ["/d", "/d", "/d", "/gone", "/gone", "/d"]


def test_unknown_per_mount_flag_is_a_value_error() -> None:
    def body(h: KernelHost) -> Any:
        with pytest.raises(ValueError, match="unknown mount option"):
            h.mount_tmpfs("t", "/", flags=frozenset({"bogus"}))
        return mount_points(h)

    assert run_in_sandbox(body) == ["/"]
