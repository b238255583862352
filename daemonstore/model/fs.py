"""Filesystem instances (superblocks) and their dentry trees, for the pure model.

No ``os``, no ``ctypes`` (docs/architecture.md §1). A dentry here is also its inode: the model has
no hard links, so nothing is lost by merging the two.
"""

from __future__ import annotations

import errno
import stat as stat_mod
from itertools import count

from daemonstore.host import Stat

DIR, FILE, SYMLINK, FIFO = "dir", "file", "symlink", "fifo"

_TYPE_BITS = {DIR: stat_mod.S_IFDIR, FILE: stat_mod.S_IFREG, SYMLINK: stat_mod.S_IFLNK,
              FIFO: stat_mod.S_IFIFO}


def err(code: int, filename: str | None = None) -> OSError:
    """The OSError the kernel would raise: errno, its text, and the path involved."""
    return OSError(code, _STRERROR.get(code, errno.errorcode.get(code, str(code))), filename)


_STRERROR = {
    errno.ENOENT: "No such file or directory", errno.EEXIST: "File exists",
    errno.ENOTDIR: "Not a directory", errno.EISDIR: "Is a directory",
    errno.EINVAL: "Invalid argument", errno.EBUSY: "Device or resource busy",
    errno.ELOOP: "Too many levels of symbolic links", errno.ENOTEMPTY: "Directory not empty",
    errno.EROFS: "Read-only file system", errno.EPERM: "Operation not permitted",
    errno.ENXIO: "No such device or address", errno.EOPNOTSUPP: "Operation not supported",
    errno.EXDEV: "Invalid cross-device link", errno.EBADF: "Bad file descriptor",
    errno.ESRCH: "No such process",
}


class Dentry:
    """A name in a filesystem tree, with the inode attributes components look at."""

    __slots__ = ("name", "parent", "fs", "kind", "mode", "uid", "gid", "data", "target",
                 "children", "ino", "deleted")

    def __init__(self, fs: Filesystem, name: str, parent: Dentry | None, kind: str,
                 mode: int, uid: int = 0, gid: int = 0) -> None:
        self.fs = fs
        self.name = name
        self.parent = parent
        self.kind = kind
        self.mode = mode & 0o7777
        self.uid = uid
        self.gid = gid
        self.data = b""
        self.target = ""
        self.children: dict[str, Dentry] = {}
        self.ino = next(fs.inos)
        self.deleted = False

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    def stat(self) -> Stat:
        size = len(self.data) if self.kind == FILE else len(self.target.encode())
        if self.kind == DIR:
            size = 40 + 20 * len(self.children)  # tmpfs-like, only for show
        nlink = 2 + sum(1 for c in self.children.values() if c.kind == DIR) \
            if self.kind == DIR else 1
        return Stat(mode=_TYPE_BITS[self.kind] | self.mode, uid=self.uid, gid=self.gid,
                    size=size, ino=self.ino, dev=self.fs.dev, nlink=nlink)

    def __repr__(self) -> str:
        return f"<Dentry {self.fs.source}:{path_in_fs(self)}>"


class Filesystem:
    """One superblock: its type, mount source, options and dentry tree."""

    __slots__ = ("fstype", "source", "data", "minor", "root", "inos")

    def __init__(self, fstype: str, source: str, minor: int, data: str = "",
                 mode: int = 0o1777) -> None:
        self.fstype = fstype
        self.source = source
        self.data = data
        self.minor = minor
        self.inos = count(1)
        self.root = Dentry(self, "", None, DIR, _tmpfs_root_mode(data, mode))

    @property
    def dev(self) -> int:
        return self.minor  # major 0, as for every anonymous (tmpfs) superblock

    @property
    def super_options(self) -> str:
        return "rw" + (f",{self.data}" if self.data else "")


def _tmpfs_root_mode(data: str, default: int) -> int:
    """tmpfs honours ``mode=`` in its data for the root directory (default 1777)."""
    for opt in data.split(","):
        key, _, value = opt.partition("=")
        if key == "mode" and value:
            try:
                return int(value, 8)
            except ValueError:
                break
    return default


def is_subdir(d: Dentry, ancestor: Dentry) -> bool:
    """``is_subdir()``: ``d`` is ``ancestor`` or lies below it (same filesystem)."""
    cur: Dentry | None = d
    while cur is not None:
        if cur is ancestor:
            return True
        cur = cur.parent
    return False


def path_in_fs(d: Dentry) -> str:
    """Path of a dentry from its filesystem root (``dentry_path``), e.g. ``/a/b``."""
    parts = []
    cur: Dentry | None = d
    while cur is not None and cur.parent is not None:
        parts.append(cur.name)
        cur = cur.parent
    return "/" + "/".join(reversed(parts))


def relative_path(d: Dentry, top: Dentry) -> str | None:
    """Path of ``d`` below ``top`` (``""`` if equal), or None if ``d`` is not under ``top``."""
    parts = []
    cur: Dentry | None = d
    while cur is not None and cur is not top:
        parts.append(cur.name)
        cur = cur.parent
    if cur is None:
        return None
    return "/".join(reversed(parts))
