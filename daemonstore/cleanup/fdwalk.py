"""Clearing a cache on the real kernel by file descriptor, one component at a time.

The path walker (:func:`daemonstore.ops.walk_tree`) names every entry by its full path, so an
entry deeper than ``PATH_MAX`` (4096 bytes: about 2048 levels of one-letter directories, which
any user can make in their own vault) can never be named, and the cleanup could free nothing
below it. Here nothing is ever named by more than one component:

* each directory is opened from its parent's fd with ``openat2(RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)``: a symlink is ``ELOOP`` (it is
  unlinked as an entry, never followed), a mount point is ``EXDEV`` (skipped, never crossed,
  whatever its device), and the opened directory must be the very inode listed (else it was
  replaced meanwhile: skipped);
* entries are examined with ``fstatat(AT_SYMLINK_NOFOLLOW)`` and removed with ``unlinkat``
  relative to the fd of the directory they were listed in;
* at most :data:`MAX_OPEN` directories are held open (the ancestors of the current one). A
  directory found deeper than that is moved up -- ``renameat`` from its parent's fd into the
  cache directory's fd, under a fresh name -- and cleared from there later: everything in the
  cache goes anyway, and a rename on one mount never leaves it (``EXDEV`` otherwise). So any
  depth is cleared with a bounded number of open fds.

The rules and the counters are those of :func:`daemonstore.cleanup.apply.clear_cache`.

**Measuring** (:func:`measure_by_fd`, what the planner counts) reads and never changes, so it
cannot move a deep subtree up; instead it holds *one* directory fd at a time: down with the
same ``openat2`` (checked to be the inode listed), up with ``openat(fd, "..")`` checked to be
the very parent it came from (device and inode). If a directory on the way was renamed
elsewhere meanwhile -- out of the cache, into the user's home or beside a symlink -- the way
up no longer leads to that parent, and the measurement stops (:class:`MovedWhileMeasured`)
instead of counting whatever is there: it never leaves the cache it was given, and any depth
is measured with two fds.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from dataclasses import dataclass, field
from typing import Protocol

from daemonstore.cleanup.plan import StepResult
from daemonstore.errors import errname
from daemonstore.kernel.syscalls import openat2
from daemonstore.kernel.uapi import (
    O_CLOEXEC,
    O_DIRECTORY,
    O_NOFOLLOW,
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
)

__all__ = ["MAX_OPEN", "FdDisk", "MovedWhileMeasured", "clear_by_fd", "measure_by_fd"]

#: directories held open at once (the current one and its ancestors)
MAX_OPEN = 64

_DIR_FLAGS = os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class FdDisk(Protocol):
    """A disk that can hand out an fd of a sandbox path (``KernelHost.open_fd``)."""

    def open_fd(self, path: str, flags: int, *, mode: int = 0o600,
                safe: bool = False) -> int: ...


@dataclass
class _Dir:
    """One open directory of the walk: its fd, the names left to look at, where it was
    listed (parent fd and name; None for the cache directory) and its shown path."""

    fd: int
    names: list[str]
    parent: int | None
    name: str
    shown: str
    moved: list[str] = field(default_factory=list)


def clear_by_fd(disk: FdDisk, path: str, dev_ino: tuple[int, int],
                result: StepResult) -> None:
    """Delete what is inside the directory ``path`` (which must still be the inode
    ``dev_ino``), never ``path`` itself; counts and problems go to ``result``."""
    try:
        top = disk.open_fd(path, _DIR_FLAGS, safe=True)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            result.vanished += 1
        else:
            result.errors.append(f"{path}: cannot open ({errname(exc.errno)})")
        return
    stack: list[_Dir] = []
    try:
        st = os.fstat(top)
        if (st.st_dev, st.st_ino) != dev_ino:
            result.skipped.append(f"{path}: replaced since it was measured: left alone")
            return
        stack.append(_Dir(top, _list(top), None, "", path))
        serial = 0
        while stack:
            here = stack[-1]
            if not here.names:
                stack.pop()
                if here.parent is None:
                    if here.moved:  # subtrees moved up from too deep: clear them too
                        here.names, here.moved = here.moved, []
                        stack.append(here)
                        continue
                    break
                os.close(here.fd)
                _rmdir(here, result)
                continue
            name = here.names.pop()
            child = _open_child(here, name, result)
            if child is None:
                continue
            if len(stack) >= MAX_OPEN:  # too deep to hold: move it up into the top directory
                os.close(child)
                serial += 1
                moved = f".daemonstore-cleanup-{os.getpid()}-{serial}"
                try:
                    os.rename(name, moved, src_dir_fd=here.fd, dst_dir_fd=top)
                except OSError as exc:
                    result.skipped.append(f"{here.shown}/{name}: cannot move up "
                                          f"({errname(exc.errno)}), left alone")
                    continue
                stack[0].moved.append(moved)
                continue
            try:
                names = _list(child)
            except OSError as exc:
                os.close(child)
                result.skipped.append(f"{here.shown}/{name}: {errname(exc.errno)} "
                                      "(unreadable), not entered")
                continue
            stack.append(_Dir(child, names, here.fd, name, f"{here.shown}/{name}"))
    finally:
        for d in stack:
            os.close(d.fd)
        if not stack or stack[0].fd != top:
            os.close(top)


def _list(fd: int) -> list[str]:
    return sorted(os.listdir(fd), reverse=True)  # popped from the end: name order


def _open_child(here: _Dir, name: str, result: StepResult) -> int | None:
    """Remove a non-directory ``name`` of ``here`` (None), or open a directory (its fd)."""
    shown = f"{here.shown}/{name}"
    try:
        st = os.stat(name, dir_fd=here.fd, follow_symlinks=False)
    except OSError as exc:
        _failed(shown, exc, result)
        return None
    if not stat_mod.S_ISDIR(st.st_mode):
        try:
            os.unlink(name, dir_fd=here.fd)  # a symlink: the link itself, never its target
        except OSError as exc:
            if exc.errno == errno.EBUSY:  # a bind-mounted file
                result.skipped.append(f"{shown}: mount point (another mount), not crossed")
            else:
                _failed(shown, exc, result)
            return None
        result.removed_files += 1
        result.removed_bytes += st.st_size if stat_mod.S_ISREG(st.st_mode) else 0
        return None
    try:
        fd = openat2(here.fd, name, _DIR_FLAGS, resolve=_RESOLVE, filename=shown)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            result.skipped.append(f"{shown}: mount point (another mount), not crossed")
        else:
            _failed(shown, exc, result)
        return None
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        result.skipped.append(f"{shown}: replaced meanwhile, not entered")
        return None
    return fd


def _rmdir(d: _Dir, result: StepResult) -> None:
    assert d.parent is not None
    try:
        os.rmdir(d.name, dir_fd=d.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
            result.kept_dirs += 1  # something stayed (a mount point) or appeared in it
        else:
            _failed(d.shown, exc, result)
        return
    result.removed_dirs += 1


def _failed(shown: str, exc: OSError, result: StepResult) -> None:
    code = exc.errno
    if code == errno.ENOENT:
        result.vanished += 1
    elif code in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EBUSY):
        result.skipped.append(f"{shown}: {errname(code)} (replaced meanwhile), left alone")
    else:
        result.errors.append(f"{shown}: {exc.strerror or errname(code)}")


class MovedWhileMeasured(OSError):
    """A directory of the cache was moved while :func:`measure_by_fd` walked it (ESTALE)."""


@dataclass
class _Level:
    """One directory of the measuring walk: the names left, its identity, its shown path."""

    names: list[str]
    dev_ino: tuple[int, int]
    shown: str


def measure_by_fd(disk: FdDisk, path: str, dev_ino: tuple[int, int]) -> tuple[int, int]:
    """(bytes of regular-file data, entries) below the directory ``path``, which must be the
    inode ``dev_ino``: every entry counted (a directory once entered, a mount point never:
    not crossed, not counted, as walk_tree), at any depth, with at most two fds open (module
    doc). Raises OSError when ``path`` cannot be opened, :class:`MovedWhileMeasured` when it
    or a directory in it was replaced or moved meanwhile."""
    fd = disk.open_fd(path, _DIR_FLAGS, safe=True)
    data = entries = 0
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != dev_ino:
            raise MovedWhileMeasured(errno.ESTALE, "replaced since it was planned", path)
        stack = [_Level(_list(fd), dev_ino, path)]
        while stack:
            here = stack[-1]
            if not here.names:
                stack.pop()
                if not stack:
                    break
                child, fd = fd, -1  # _up closes it, whatever happens
                fd = _up(child, stack[-1])
                continue
            name = here.names.pop()
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since it was listed
            if not stat_mod.S_ISDIR(st.st_mode):
                entries += 1
                data += st.st_size if stat_mod.S_ISREG(st.st_mode) else 0
                continue
            try:
                child = openat2(fd, name, _DIR_FLAGS, resolve=_RESOLVE,
                                filename=f"{here.shown}/{name}")
            except OSError as exc:
                if exc.errno in (errno.EXDEV, errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue  # a mount point (not crossed), or replaced meanwhile
                raise
            now = os.fstat(child)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(child)
                continue  # replaced meanwhile: not entered
            try:
                names = _list(child)
            except OSError:
                os.close(child)
                continue
            entries += 1
            os.close(fd)
            fd = child
            stack.append(_Level(names, (st.st_dev, st.st_ino), f"{here.shown}/{name}"))
    finally:
        if fd >= 0:
            os.close(fd)
    return data, entries


def _up(fd: int, parent: _Level) -> int:
    """The fd of ``parent``, reached from its child's ``fd`` through ``..`` and checked to be
    that very directory; ``fd`` is closed either way."""
    try:
        up = os.open("..", _DIR_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    st = os.fstat(up)
    if (st.st_dev, st.st_ino) != parent.dev_ino:
        os.close(up)
        raise MovedWhileMeasured(errno.ESTALE, "a directory was moved out of it while it was "
                                 "measured", parent.shown)
    return up
