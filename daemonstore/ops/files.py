"""Plan steps that act on directories and their contents (plan layer: building them is pure,
``apply`` only calls the Host it is given), and the one safe tree walker.

The scenario language (:mod:`daemonstore.ops.scenario`) has only ``mkdir -p``; plans need more:

===================  ==================================================  ===================
op                   does                                                line
===================  ==================================================  ===================
:class:`MakeDir`     one directory, mode exact, ``EEXIST`` if present    ``mkdir -m 0755 P``
:class:`MakeTarget`  MakeDir of a mount target; undone by rmdir          ``mkdir -m 0755 P``
:class:`EnsureDir`   create, or repair owner and mode, when applied      ``install -d ...``
:class:`Chmod`       ``fchmodat``; :class:`DirChmod` type-checks first   ``chmod 0755 P``
:class:`Chown`       ``fchownat``; :class:`DirChown` type-checks first   ``chown 0:0 P``
:class:`RemoveDir`   an empty directory only                             ``rmdir P``
:class:`RenewDir`    rmdir an empty one, mkdir it again (sign-out)       ``rmdir P && mkdir``
:class:`RemoveTree`  a tree, never crossing a mount (:func:`walk_tree`)  ``rm -r ...``
===================  ==================================================  ===================

**Safe.** Every op here resolves its path with ``safe=True`` (MakeDir, Chmod and Chown take a
``safe`` field that defaults to it): no symlink may appear in any component, the last one
included (``RESOLVE_NO_SYMLINKS``, ``ELOOP`` otherwise; host.py), the way libbrillo's ``SafeFD``
walks every component with ``O_NOFOLLOW`` (docs/chromeos.md §2.5, protection against symlink
and TOCTOU attacks). So ``chmod``/``chown`` of a symlink is ``ELOOP`` rather than Linux's
``EOPNOTSUPP`` (no lchmod) or a silent lchown, and a symlink planted at
``/run/daemon-store/<d>`` can never redirect a chmod or chown (the original enumerates with
``stat()`` and would follow one). The ``Dir*`` ops and EnsureDir also ``lstat`` the path first,
so a file or fifo planted where a directory should be is refused (``ENOTDIR``: SafeFD's
``kWrongType``) instead of being chmodded.

``to_line`` uses the coreutils spelling; these lines are not part of the scenario language.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from daemonstore.host import Host
from daemonstore.ops.base import Op, quote
from daemonstore.ops.guard import remove_guard
from daemonstore.ops.tree import RemoveTree, TreeItem, TreeReader, expect_dir, walk_tree
from daemonstore.records import fast_init

__all__ = [
    "Chmod",
    "Chown",
    "DirChmod",
    "DirChown",
    "EnsureDir",
    "MakeDir",
    "MakeTarget",
    "RemoveDir",
    "RemoveTree",
    "RenewDir",
    "TreeItem",
    "TreeReader",
    "expect_dir",
    "walk_tree",
]


@fast_init  # startup builds one per store (records.py)
@dataclass(frozen=True)
class MakeDir(Op):
    """``mkdir -m MODE P``: create one directory (parents must exist), mode exact (no umask).

    Unlike the scenario's ``Mkdir`` (``mkdir -p``) this fails with ``EEXIST`` when ``P`` exists:
    a plan only creates what it saw missing, and something appearing in between is news.
    """

    path: str
    mode: int = 0o755
    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.mkdir(self.path, self.mode, safe=self.safe)

    def to_line(self) -> str:
        return f"mkdir -m {self.mode:04o} {quote(self.path)}"


@dataclass(frozen=True)
class MakeTarget(MakeDir):
    """``mkdir -m MODE P`` of a mount target (outside the user's shadow directory, or the
    vault's mount point, which sign-out removes too): a failed sign-in removes it again
    (rollback), so a refused sign-in leaves no trace outside the vault."""

    def undo(self) -> Op | None:
        return RemoveDir(self.path)


@dataclass(frozen=True)
class EnsureDir(Op):
    """``install -d -m MODE -o UID -g GID P`` decided when applied: for a directory inside a
    vault the plan cannot look into (a loop vault's ext4 image is not mounted at plan time).
    Missing: mkdir, chown, chmod (chmod last: chown drops setgid, and mkdirat honours only
    01777, docs/chromeos.md §2.5 SafeCreateDirAndSetOwnershipAndPermissions). Present: owner and
    mode repaired where they differ. A symlink is ``ELOOP``, anything else not a directory
    ``ENOTDIR`` (SafeFD's kSymlinkDetected / kWrongType), so sign-in rolls back."""

    path: str
    mode: int
    uid: int
    gid: int

    def apply(self, host: Host) -> None:
        try:
            st = host.lstat(self.path, safe=True)
        except FileNotFoundError:
            host.mkdir(self.path, self.mode, safe=True)
            host.chown(self.path, self.uid, self.gid, safe=True)
            host.chmod(self.path, self.mode, safe=True)
            return
        expect_dir(host, self.path)
        if (st.uid, st.gid) != (self.uid, self.gid):
            host.chown(self.path, self.uid, self.gid, safe=True)
        if st.perm != self.mode or (st.uid, st.gid) != (self.uid, self.gid):
            host.chmod(self.path, self.mode, safe=True)

    def to_line(self) -> str:
        return (f"install -d -m {self.mode:04o} -o {self.uid} -g {self.gid} {quote(self.path)}"
                "  # or repair owner and mode")


@dataclass(frozen=True)
class Chmod(Op):
    """``chmod MODE P`` (``fchmodat``; the mode replaces all 12 permission bits)."""

    path: str
    mode: int
    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.chmod(self.path, self.mode, safe=self.safe)

    def to_line(self) -> str:
        return f"chmod {self.mode:04o} {quote(self.path)}"


@dataclass(frozen=True)
class DirChmod(Chmod):
    """``chmod MODE P`` of a directory (type-checked first). Always issued after a mkdir,
    because ``mkdirat`` honours only the 01777 bits and drops setgid (docs/chromeos.md §2.5,
    ``SafeCreateDirAndSetOwnershipAndPermissions``; §7 item 6)."""

    def apply(self, host: Host) -> None:
        expect_dir(host, self.path)
        super().apply(host)


@fast_init  # startup builds one per store (records.py)
@dataclass(frozen=True)
class Chown(Op):
    """``chown UID:GID P`` (numeric ids; ``-1`` leaves that id unchanged, as fchownat(2))."""

    path: str
    uid: int
    gid: int
    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.chown(self.path, self.uid, self.gid, safe=self.safe)

    def to_line(self) -> str:
        uid = "" if self.uid == -1 else str(self.uid)
        gid = "" if self.gid == -1 else str(self.gid)
        return f"chown {uid}:{gid} {quote(self.path)}"


@dataclass(frozen=True)
class DirChown(Chown):
    """``chown UID:GID P`` of a directory: type-checked first, so a file or fifo swapped in
    since the plan was made is refused (``ENOTDIR``) rather than chowned."""

    def apply(self, host: Host) -> None:
        expect_dir(host, self.path)
        super().apply(host)


@dataclass(frozen=True)
class RemoveDir(Op):
    """``rmdir P``: removes only an empty directory, so it can never lose data. A mount-point
    guard (ops/guard.py) that is the directory's only entry does not count as content: it is
    removed first (sign-out, rollback and repair undo the guard sign-in put there)."""

    path: str

    def apply(self, host: Host) -> None:
        try:
            host.rmdir(self.path, safe=True)
        except OSError as exc:
            # only ENOTEMPTY: EBUSY (a mount point here) is never looked into
            if exc.errno != errno.ENOTEMPTY or not remove_guard(host, self.path):
                raise
            host.rmdir(self.path, safe=True)

    def to_line(self) -> str:
        return f"rmdir {quote(self.path)}"


@dataclass(frozen=True)
class RenewDir(Op):
    """``rmdir P && mkdir -m MODE P``: an empty directory left in place as a fresh one, owned by
    the caller (root). The rmdir detaches every mount on the old dentry in every mount
    namespace (the kernel's ``__detach_mounts()``, lazily): a copy of a bind that no umount
    propagates to (a private namespace made while it was mounted) goes with it, and the path
    is still there, empty, as before. ``rmdir`` removes only an empty directory (``ENOTEMPTY``:
    nothing changed), so it can never lose data.

    A plain rmdir, unlike :class:`RemoveDir`: it never takes a mount-point guard away
    (ops/guard.py). Guards go only into mount points in chronos-owned ``/home/chronos``; what
    is renewed is a store target in root-owned ``/run/daemon-store{,-cache}/<d>``, which only
    root can remove, so it never gets one, and any entry found in it is content (kept and
    reported by the caller), never ours to delete."""

    path: str
    mode: int

    def apply(self, host: Host) -> None:
        self.remove(host)
        self.make(host)

    def remove(self, host: Host) -> None:
        host.rmdir(self.path, safe=True)

    def make(self, host: Host) -> None:
        host.mkdir(self.path, self.mode, safe=True)

    def to_line(self) -> str:
        return f"rmdir {quote(self.path)} && mkdir -m {self.mode:04o} {quote(self.path)}"
