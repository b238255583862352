"""Kernel layer, the process's own view: what a daemon on a real system asks about its own mount
namespace, with plain paths, no sandbox, no mount and no root.

* :func:`mount_id`: which mount a path resolves onto (``statx`` ``STATX_MNT_ID``, Linux 5.8;
  ``mnt_id:`` of ``/proc/self/fdinfo`` before that), never following a symlink;
* :func:`read_mountinfo`: ``/proc/self/mountinfo`` as it is (host paths, nothing filtered);
* :func:`watch_mount_table`: a call on the running asyncio loop whenever that table changes.

Why :func:`watch_mount_table` needs an epoll of its own: the kernel marks an open
``/proc/PID/mountinfo`` with ``POLLPRI | POLLERR`` after every change to the mount namespace it
was opened in (``mounts_poll`` in fs/proc_namespace.c compares the namespace's event counter with
the one the file last saw), while ``POLLIN`` is always set; asyncio's ``add_reader`` waits for
``POLLIN`` only, so it would spin. An epoll that watches the file for ``EPOLLPRI`` alone becomes
readable exactly when the table changed, and *that* fd is what the loop watches. A thread doing
``select.poll`` would do too, but a process with a second thread can no longer ``setns`` into
another mount namespace (``EINVAL``), which the kernel backend and its tests do.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import select
import struct
from collections.abc import Callable

from daemonstore.kernel.files import _mnt_id
from daemonstore.kernel.syscalls import openat2, read_all, statx
from daemonstore.kernel.uapi import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    O_CLOEXEC,
    O_PATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    STATX_MNT_ID,
    STATX_SIZE,
)

__all__ = ["mount_id", "read_mountinfo", "watch_mount_table"]

MOUNTINFO = "/proc/self/mountinfo"
#: struct statx: ``stx_mask`` at offset 0, ``stx_mnt_id`` at offset 144 (include/uapi/linux/stat.h)
_MASK = struct.Struct("=I")
_MNT_ID = struct.Struct("=Q")
_MNT_ID_OFFSET = 144


def mount_id(path: str) -> int:
    """The id (mountinfo field 1) of the mount ``path`` resolves onto in this process's mount
    namespace. No symlink is followed in any component (``ELOOP``): the store's contents belong
    to a user, and so does anything planted on the way (host.py, ``safe=True``)."""
    fd = openat2(AT_FDCWD, path, O_PATH | O_CLOEXEC, 0,
                 RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, filename=path)
    try:
        return _fd_mount_id(fd, path)
    finally:
        os.close(fd)


def _fd_mount_id(fd: int, path: str) -> int:
    buf = ctypes.create_string_buffer(STATX_SIZE)
    try:
        statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, buf, filename=path)
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EPERM):  # no statx, or a seccomp filter
            raise
    else:
        if _MASK.unpack_from(buf)[0] & STATX_MNT_ID:
            return int(_MNT_ID.unpack_from(buf, _MNT_ID_OFFSET)[0])
    return _mnt_id(fd)  # before Linux 5.8: the same number from /proc/self/fdinfo


def read_mountinfo() -> str:
    """``/proc/self/mountinfo``: this process's mount namespace, as this process sees it."""
    fd = os.open(MOUNTINFO, os.O_RDONLY | O_CLOEXEC)
    try:
        return read_all(fd, 1 << 17).decode("utf-8", "surrogateescape")
    finally:
        os.close(fd)


def watch_mount_table(notify: Callable[[], None]) -> Callable[[], None]:
    """Call ``notify()`` on the running asyncio loop after each change to this process's mount
    namespace (a mount or an umount in it, one propagated into it included); returns the
    function that stops the watch. The namespace is the one the process is in *now*: the file
    keeps watching it after a later ``setns``. A call may be spurious, a change is never missed
    once this returns (the file remembers the counter it was opened at)."""
    loop = asyncio.get_running_loop()
    info = os.open(MOUNTINFO, os.O_RDONLY | O_CLOEXEC)
    try:
        ep = select.epoll(1, select.EPOLL_CLOEXEC)
    except BaseException:
        os.close(info)
        raise
    try:
        ep.register(info, select.EPOLLPRI)
        loop.add_reader(ep.fileno(), _ready, ep, notify)
    except BaseException:
        ep.close()
        os.close(info)
        raise
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        if not loop.is_closed():
            loop.remove_reader(ep.fileno())
        ep.close()
        os.close(info)

    return stop


def _ready(ep: select.epoll, notify: Callable[[], None]) -> None:
    # The loop's own poll of the epoll fd already re-polled the file and took the change (the
    # file's counter is updated by each poll), so this drain may find nothing: the epoll fd
    # being readable is the news. Draining lets it go quiet until the next change.
    ep.poll(0)
    notify()
