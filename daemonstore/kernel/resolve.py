"""Kernel layer, path resolution: what every KernelHost call starts with. A sandbox path is opened
with ``openat2(root_fd, RESOLVE_IN_ROOT)`` below the sandbox root of the current namespace, so a
symlink planted in the sandbox can never lead to the host's files; the call then acts on that fd
(or on ``/proc/self/fd/N``, exactly the dentry resolution found).

:class:`Resolver` is the base of :class:`~daemonstore.kernel.host.KernelHost`: its state (the
sandbox root in each namespace it knows) and the confined open, parent lookup and fd scope the
file, mount and namespace methods share.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from dataclasses import dataclass
from typing import Any

from daemonstore.kernel.syscalls import BoundCalls, OpenHow, last_error, os_error
from daemonstore.kernel.uapi import O_DIRECTORY, O_PATH, OPEN_HOW_SIZE_VER0

_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


@dataclass
class Namespace:
    """One namespace a host knows by a name (created, or opened from a pinned file): its nsfs
    fd, and its own O_PATH fd of the sandbox root (an fd opened in one namespace refers to that
    namespace's mounts)."""

    ns_fd: int
    root_fd: int


def fd_path(fd: int) -> str:
    """The magic link that names exactly the dentry ``fd`` refers to (proc(5))."""
    return f"/proc/self/fd/{fd}"


def check_absolute(path: str) -> None:
    """Interface paths are sandbox-absolute (host.py); the model gives EINVAL for others too."""
    if not path.startswith("/"):
        raise os_error(errno.EINVAL, path)


class ClosingFd:
    """``with ClosingFd(fd, value) as value:`` hands out ``value`` and closes ``fd`` at the end
    of the block. A class rather than ``@contextmanager``: KernelHost opens one to three fds per
    call, and a generator-based context manager costs more than the system calls it wraps."""

    __slots__ = ("fd", "value")

    def __init__(self, fd: int, value: Any) -> None:
        self.fd, self.value = fd, value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class Resolver:
    """KernelHost's state and its confined lookups (set up by KernelHost's constructor).

    ``_root`` is the HOST path of the sandbox root; ``_ns`` maps each namespace name to its
    :class:`Namespace`; ``_current`` is the one this process is in; ``_calls`` are the bound
    system calls of this host."""

    #: openat2(2): with RESOLVE_IN_ROOT a concurrent rename or mount makes the lookup fail with
    #: EAGAIN "and the caller may choose to retry"
    _EAGAIN_RETRIES = 8

    _root: str
    _ns: dict[str, Namespace]
    _calls: BoundCalls
    _current_name: str
    #: ``_ns[_current]``, kept by the ``_current`` setter: every call reads its root fd
    _current_ns: Namespace

    @property
    def _current(self) -> str:
        return self._current_name

    @_current.setter
    def _current(self, name: str) -> None:
        self._current_ns = self._ns[name]
        self._current_name = name

    @property
    def _root_fd(self) -> int:
        return self._current_ns.root_fd

    def _open(self, path: str, flags: int, *, safe: bool, mode: int = 0) -> int:
        """openat2(root_fd, path) confined to the sandbox: RESOLVE_IN_ROOT makes ``..`` and
        absolute symlinks stop at the sandbox root; ``safe`` adds RESOLVE_NO_SYMLINKS |
        RESOLVE_NO_MAGICLINKS (ELOOP on any symlink, host.py)."""
        if path[:1] != "/":
            check_absolute(path)  # raises
        # b"" (the root itself) becomes ".": from root_fd, root_fd's own dentry
        rel = path.lstrip("/").encode(_FS_ENCODING, _FS_ERRORS) or b"."
        calls = self._calls
        how = None if mode else (calls.hows_safe if safe else calls.hows_in_root).get(flags)
        if how is None:
            how = calls.how(flags, mode, safe)
        fd = calls.openat2(calls.nr_openat2, self._current_ns.root_fd, rel, how,
                           OPEN_HOW_SIZE_VER0)
        if fd >= 0:
            return fd
        return self._open_again(rel, how, path)

    def _open_again(self, rel: bytes, how: OpenHow, path: str) -> int:
        """After a failed openat2 of ``rel`` (errno still set): retry while it is EAGAIN, else
        raise the error naming ``path``. Callers that inline the first openat2 (make_store,
        kernel/store.py) end here too, so both fail alike."""
        calls = self._calls
        root_fd = self._current_ns.root_fd
        for _ in range(self._EAGAIN_RETRIES - 1):
            if ctypes.get_errno() != errno.EAGAIN:
                break
            fd = calls.openat2(calls.nr_openat2, root_fd, rel, how, OPEN_HOW_SIZE_VER0)
            if fd >= 0:
                return fd
        raise last_error(path)

    def _opened(self, path: str, flags: int, *, safe: bool) -> ClosingFd:
        """``with self._opened(...) as fd``: :meth:`_open`, closed at the end of the block."""
        fd = self._open(path, flags, safe=safe)
        return ClosingFd(fd, fd)

    def _parent(self, path: str, *, safe: bool) -> ClosingFd:
        """``with`` (O_PATH fd of the directory holding the last component, that component) for
        the *at() calls that must not follow the last component.

        A last component of ``.``/``..`` (or ``/`` itself) is resolved in full and acted on as
        ``.`` of that directory: ``..`` relative to the root fd would leave the sandbox, which
        RESOLVE_IN_ROOT only prevents inside openat2."""
        dirfd, name = self._parent_of(path, safe)
        return ClosingFd(dirfd, (dirfd, name))

    def _parent_of(self, path: str, safe: bool) -> tuple[int, str]:
        """What ``_parent`` hands out; the caller closes the fd."""
        check_absolute(path)
        head, _, name = path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            head, name = path, "."
        return self._open(head or "/", O_PATH | O_DIRECTORY, safe=safe), name
