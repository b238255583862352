"""Kernel layer, the Host interface's mount methods on the real kernel (tmpfs, bind, move,
propagation, umount, remount, detached trees), and ``mount_block`` for the loop vault.

Every mount acts on ``/proc/self/fd/N`` of exactly the dentry the confined openat2 found
(:mod:`daemonstore.kernel.resolve`); umount is the exception, see :meth:`MountMethods.umount`.
The ``MS_*`` numbers come from the one table, :data:`daemonstore.mountflags.MS_FLAGS`.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as stat_mod

from daemonstore.host import Propagation
from daemonstore.kernel.guards import SandboxRefused
from daemonstore.kernel.resolve import Resolver, fd_path
from daemonstore.kernel.syscalls import fsencode, last_error, mount, move_mount, open_tree, os_error
from daemonstore.kernel.uapi import (
    AT_EMPTY_PATH,
    AT_RECURSIVE,
    MNT_DETACH,
    MOVE_MOUNT_F_EMPTY_PATH,
    MOVE_MOUNT_T_EMPTY_PATH,
    O_DIRECTORY,
    O_PATH,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
    UMOUNT_NOFOLLOW,
)
from daemonstore.mountflags import MS_FLAGS as MS
from daemonstore.mountflags import option_bits

_MS_BIND, _MS_REC = MS["MS_BIND"], MS["MS_REC"]
_PROPAGATION_FLAGS = {Propagation.SHARED: MS["MS_SHARED"], Propagation.SLAVE: MS["MS_SLAVE"],
                      Propagation.PRIVATE: MS["MS_PRIVATE"],
                      Propagation.UNBINDABLE: MS["MS_UNBINDABLE"]}


def propagation_flag(propagation: Propagation | str) -> int:
    """The MS_* flag of a propagation type (a member or its value); ValueError if unknown."""
    try:  # a member, or its value: StrEnum members hash and compare as their strings
        flag = _PROPAGATION_FLAGS.get(propagation)  # type: ignore[call-overload]
    except TypeError:
        flag = None
    if flag is not None:
        return flag
    try:
        return _PROPAGATION_FLAGS[Propagation(propagation)]
    except ValueError:
        raise ValueError(f"unknown propagation type {propagation!r} "
                         "(want shared, slave, private or unbindable)") from None


class MountMethods(Resolver):
    """Host's mount methods (host.py), plus :meth:`mount_block` for the loop vault.

    ``_detached`` maps the handles :meth:`clone_detached` gives out to their ``open_tree`` fds
    (set up by KernelHost's constructor)."""

    _detached: dict[str, int]
    _handles: itertools.count[int]

    def _mount_at(self, source: bytes | None, fd: int, fstype: bytes | None, flags: int,
                  data: bytes | None, path: str) -> None:
        """mount(2) onto exactly the dentry ``fd`` refers to (its /proc/self/fd magic link);
        errors name ``path``."""
        if self._calls.mount(source, b"/proc/self/fd/%d" % fd, fstype, flags, data):
            raise last_error(path)

    def mount_tmpfs(self, source: str, target: str, *, flags: frozenset[str] = frozenset(),
                    data: str = "", safe: bool = False) -> None:
        ms = option_bits(flags)
        with self._opened(target, O_PATH, safe=safe) as fd:
            self._mount_at(fsencode(source), fd, b"tmpfs", ms, fsencode(data or None), target)

    def bind(self, source: str, target: str, *, recursive: bool = False,
             safe: bool = False) -> None:
        # the hot path of startup and sign-in (bench/boot.py, bench/signin.py): _mount_at
        # written out
        flags = (_MS_BIND | _MS_REC) if recursive else _MS_BIND
        sfd = self._open(source, O_PATH, safe=safe)
        try:
            tfd = self._open(target, O_PATH, safe=safe)
            try:
                if self._calls.mount(b"/proc/self/fd/%d" % sfd, b"/proc/self/fd/%d" % tfd, None,
                                     flags, None):
                    raise last_error(target)
            finally:
                os.close(tfd)
        finally:
            os.close(sfd)

    def move(self, source: str, target: str, *, safe: bool = False) -> None:
        with self._opened(source, O_PATH, safe=safe) as sfd, \
                self._opened(target, O_PATH, safe=safe) as tfd:
            self._mount_at(b"/proc/self/fd/%d" % sfd, tfd, None, MS["MS_MOVE"], None, target)

    def make(self, target: str, propagation: Propagation | str, *, recursive: bool = False,
             safe: bool = False) -> None:
        # the hot path of startup: a member's flag straight from the table, _mount_at written out
        flags = (_PROPAGATION_FLAGS[propagation] if type(propagation) is Propagation
                 else propagation_flag(propagation))
        if recursive:
            flags |= _MS_REC
        fd = self._open(target, O_PATH, safe=safe)
        try:
            if self._calls.mount(None, b"/proc/self/fd/%d" % fd, None, flags, None):
                raise last_error(target)
        finally:
            os.close(fd)

    def umount(self, target: str, *, detach: bool = False, safe: bool = False) -> None:
        # Not umount2("/proc/self/fd/N"): an open fd pins the mount (EBUSY, propagate_mount_busy()).
        # Not umount2(host path) either: resolved from the real "/", it enters a mount stacked on
        # the sandbox root (a propagated copy can land there, docs/propagation.md §6 item 12), which
        # paths resolved from root_fd never do. So: canonicalize through openat2 (symlinks followed
        # inside the sandbox), then umount2 the last component relative to its parent directory --
        # which pins only the parent mount. UMOUNT_NOFOLLOW: the canonical name is no symlink we
        # meant to follow.
        path = self._canonical(target, safe=safe)
        head, _, name = path.rpartition("/")
        flags = UMOUNT_NOFOLLOW | (MNT_DETACH if detach else 0)
        with self._opened(head or "/", O_PATH | O_DIRECTORY, safe=safe) as dirfd:
            # the name looked up from the parent directory's fd through its magic link: the
            # same lookup as from a cwd there (and the open fd, like a cwd, pins only the
            # parent mount), without changing and restoring the cwd. "/" itself: "." from
            # the root dir, which LOOKUP_MOUNTPOINT takes to its stack top
            rel = os.fsencode(name or ".")
            if self._calls.umount2(b"/proc/self/fd/%d/%s" % (dirfd, rel), flags):
                raise last_error(target)

    def _canonical(self, path: str, *, safe: bool) -> str:
        """The symlink-free sandbox path of what ``path`` resolves to (d_path via the fd's magic
        link), refusing anything that is not under the sandbox root."""
        with self._opened(path, O_PATH, safe=safe) as fd:
            host_path = os.readlink(fd_path(fd))
        prefix = self._root.rstrip("/")  # "" for a host on "/"
        if host_path == self._root:
            return "/"
        if host_path.startswith(prefix + "/"):
            return host_path[len(prefix):]
        raise SandboxRefused(f"{path!r} resolved to {host_path!r}, outside the sandbox")

    def remount_bind(self, target: str, flags: frozenset[str], *, safe: bool = False) -> None:
        # MS_REMOUNT|MS_BIND replaces the per-mount flags; path_mount() adds MNT_RELATIME when
        # no atime flag is given, which is the "relatime kept" of host.py
        ms = MS["MS_REMOUNT"] | MS["MS_BIND"] | option_bits(flags)
        fd = self._open(target, O_PATH, safe=safe)
        try:
            self._mount_at(None, fd, None, ms, None, target)
        finally:
            os.close(fd)

    # ---- kernel only (not in the Host interface): block devices, for the loop vault ---------

    def mount_block(self, device: str, target: str, fstype: str, *,
                    flags: frozenset[str] = frozenset(), data: str = "",
                    safe: bool = False) -> None:
        """``mount -t FSTYPE DEVICE TARGET`` of a block device. ``device`` is a *host* path
        (``/dev/loopN``: devices live outside the sandbox) and must be a block device; it is
        passed to mount(2) as given, so mountinfo shows it as the source (sign-out finds the
        loop device there). ``target`` is a sandbox path, resolved like every other."""
        st = os.stat(device)
        if not stat_mod.S_ISBLK(st.st_mode):
            raise os_error(errno.ENOTBLK, device)
        with self._opened(target, O_PATH, safe=safe) as fd:
            mount(device, fd_path(fd), fstype, option_bits(flags), data or None,
                  filename=target)

    # ---- detached trees (docs/propagation.md §2.9) -------------------------------------------

    def clone_detached(self, source: str, *, recursive: bool = False,
                       safe: bool = False) -> str:
        """``open_tree(OPEN_TREE_CLONE[|AT_RECURSIVE])`` on exactly the dentry openat2 found; the
        tree lives in an anonymous namespace, held by its fd, until attached or dropped."""
        flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
        flags |= AT_RECURSIVE if recursive else 0
        with self._opened(source, O_PATH, safe=safe) as fd:
            tree_fd = open_tree(fd, "", flags, filename=source)
        handle = f"@{next(self._handles)}"
        self._detached[handle] = tree_fd
        return handle

    def attach_detached(self, handle: str, target: str, *, safe: bool = False) -> None:
        """``move_mount(MOVE_MOUNT_F_EMPTY_PATH)`` of a detached tree onto ``target`` (attached
        like a bind); the handle stays valid if the kernel refuses."""
        tree_fd = self._detached.get(handle)
        if tree_fd is None:
            raise os_error(errno.EBADF, handle)
        with self._opened(target, O_PATH, safe=safe) as fd:
            move_mount(tree_fd, "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                       filename=target)
        os.close(self._detached.pop(handle))

    def drop_detached(self, handle: str) -> None:
        """Close a detached tree's fd: the last reference dissolves the anonymous namespace."""
        tree_fd = self._detached.pop(handle, None)
        if tree_fd is not None:
            os.close(tree_fd)
