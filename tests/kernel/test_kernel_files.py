"""KernelHost file operations on a real tmpfs: round trips, exact modes, and kernel errnos."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pytest

from daemonstore.host import Host, Stat
from daemonstore.kernel import KernelHost, run_in_sandbox
from tests.kernel.util import errname

pytestmark = pytest.mark.kernel


def test_kernel_host_satisfies_the_host_protocol() -> None:
    assert run_in_sandbox(lambda h: (isinstance(h, Host), h.kind)) == (True, "kernel")


def test_write_read_append_and_stat() -> None:
    def body(h: KernelHost) -> Any:
        h.write_file("/f", b"hello", mode=0o600)
        h.write_file("/f", b" world", append=True)
        data = h.read_file("/f")
        st = h.stat("/f")
        h.write_file("/f", b"new")  # truncates, keeps the mode of the existing file
        return data, st, h.read_file("/f"), h.stat("/f").perm

    data, st, rewritten, perm = run_in_sandbox(body)
    assert data == b"hello world"
    assert isinstance(st, Stat) and st.is_file and st.size == 11 and st.perm == 0o600
    assert (st.uid, st.gid, st.nlink) == (0, 0, 1)
    assert (rewritten, perm) == (b"new", 0o600)


def test_modes_are_exact_whatever_the_umask() -> None:
    def body(h: KernelHost) -> Any:
        os.umask(0o077)
        h.mkdir("/d", 0o1777)
        h.mkdir("/p/q/r", 0o750, parents=True)
        h.write_file("/f", b"", mode=0o664)
        h.mkfifo("/fifo", 0o620)
        return [h.stat(p).perm for p in ("/d", "/p", "/p/q", "/p/q/r", "/f", "/fifo")]

    assert run_in_sandbox(body) == [0o1777, 0o750, 0o750, 0o750, 0o664, 0o620]


def test_mkdir_errnos_and_parents() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/a")
        h.write_file("/file", b"")
        out = [errname(h.mkdir, "/a"), errname(h.mkdir, "/x/y"), errname(h.mkdir, "/file/y"),
               errname(h.mkdir, "/"), errname(h.mkdir, "/a", parents=True),
               errname(h.mkdir, "/file", parents=True), errname(h.mkdir, "relative")]
        h.symlink("/a", "/to-a")
        h.mkdir("/to-a/b", parents=True)  # mkdir -p accepts a symlink to a directory
        return out, h.listdir("/a")

    assert run_in_sandbox(body) == (
        ["EEXIST", "ENOENT", "ENOTDIR", "EEXIST", None, "EEXIST", "EINVAL"], ["b"])


def test_listdir_unlink_rmdir() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/d")
        for name in ("zeta", "alpha", "mid"):
            h.write_file(f"/d/{name}", b"")
        listed = h.listdir("/d")
        errs = [errname(h.rmdir, "/d"), errname(h.unlink, "/d"), errname(h.rmdir, "/d/alpha"),
                errname(h.listdir, "/d/alpha"), errname(h.unlink, "/d/none")]
        for name in listed:
            h.unlink(f"/d/{name}")
        h.rmdir("/d")
        return listed, errs, h.exists("/d")

    assert run_in_sandbox(body) == (
        ["alpha", "mid", "zeta"], ["ENOTEMPTY", "EISDIR", "ENOTDIR", "ENOTDIR", "ENOENT"], False)


def test_symlinks_stat_lstat_readlink_exists() -> None:
    def body(h: KernelHost) -> Any:
        h.write_file("/target", b"12345")
        h.symlink("/target", "/abs")
        h.symlink("target", "/rel")
        h.symlink("/nowhere", "/dangling")
        return (h.readlink("/abs"), h.readlink("/rel"), h.stat("/abs").size,
                h.stat("/rel").is_file, h.lstat("/abs").is_symlink, h.exists("/dangling"),
                errname(h.stat, "/dangling"), errname(h.readlink, "/target"),
                errname(h.symlink, "/x", "/abs"), h.exists("/none"))

    assert run_in_sandbox(body) == ("/target", "target", 5, True, True, True, "ENOENT",
                                    "EINVAL", "EEXIST", False)


def test_chmod_and_chown_follow_or_not() -> None:
    def body(h: KernelHost) -> Any:
        h.write_file("/f", b"")
        h.symlink("/f", "/l")
        h.chmod("/l", 0o4711)
        h.chown("/l", 1234, 5678)
        followed = (h.stat("/f").perm, h.stat("/f").uid, h.stat("/f").gid)
        h.chown("/l", 42, 43, follow_symlinks=False)
        link = h.lstat("/l")
        return (followed, (link.uid, link.gid), h.stat("/f").uid,
                errname(h.chmod, "/l", 0o600, follow_symlinks=False),
                errname(h.chmod, "/none", 0o600))

    # chown clears setuid on a regular file (as the model does)
    # (Python names errno 95 ENOTSUP; EOPNOTSUPP is the same number on Linux)
    assert run_in_sandbox(body) == ((0o711, 1234, 5678), (42, 43), 1234,
                                    errno.errorcode[errno.EOPNOTSUPP], "ENOENT")


def test_write_file_on_directories_fifos_and_dangling_symlinks() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/d")
        h.mkfifo("/fifo")
        h.symlink("/made-by-write", "/dangling")
        out = [errname(h.write_file, "/d", b"x"), errname(h.write_file, "/fifo", b"x"),
               h.read_file("/fifo"), errname(h.read_file, "/d")]
        h.write_file("/dangling", b"created through the link", mode=0o640)
        made = h.lstat("/made-by-write")
        return out, h.read_file("/made-by-write"), stat.S_IMODE(made.mode), made.is_file

    assert run_in_sandbox(body) == (["EISDIR", "ENXIO", b"", "EISDIR"],
                                    b"created through the link", 0o640, True)


def test_stat_of_the_root_and_dot_dot_components() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/a/b", parents=True)
        root = h.stat("/")
        return (root.is_dir, h.stat("/a/b/..").ino == h.stat("/a").ino,
                h.stat("/../../..").ino == root.ino, errname(h.unlink, "/a/.."),
                errname(h.rmdir, "/a/."))

    assert run_in_sandbox(body) == (True, True, True, "EISDIR", "EINVAL")


def _mnt_id_matches_mountinfo(host: KernelHost) -> tuple[bool, bool]:
    from daemonstore import mountinfo

    host.mkdir("/m")
    host.mkdir("/plain")
    host.mount_tmpfs("m", "/m")
    by_id = {e.mount_id: e for e in mountinfo.parse(host.mountinfo())}
    return (by_id[host.stat("/m").mnt_id].mount_point == "/m",
            by_id[host.lstat("/plain").mnt_id].mount_point == "/")


def test_stat_mnt_id_names_the_mountinfo_entry() -> None:
    """Stat.mnt_id (from /proc/self/fdinfo) is mountinfo's field 1, as in the model."""
    assert run_in_sandbox(_mnt_id_matches_mountinfo) == (True, True)
