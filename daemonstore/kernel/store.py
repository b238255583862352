"""Kernel layer, :meth:`Host.make_store` fused: startup's four steps for a missing store
(``mkdir``, ``chown``, self-``bind``, ``make`` shared) in one Python call that issues exactly the
system calls the four separate calls issue, in the same order, with the same checks and errors.

Why fused: startup is on the boot path and must cost at most 1.3x its syscall floor (issue 14
item 6; ``python -m bench.boot``). Per store, the separate path pays for four Op dispatches and
four Host calls, each re-splitting and re-encoding the same path and looking up the same
``open_how`` structs; here the path is split and encoded once. Nothing is left out: every
resolution is still ``openat2(root_fd, RESOLVE_IN_ROOT[|RESOLVE_NO_SYMLINKS|NO_MAGICLINKS])`` of
the whole path from the sandbox root (no fd kept from one step to the next, so a step sees what
a separate call would see), the mode is set exactly on the reopened directory
(:meth:`FileMethods._mkdir_in`), ``chown`` refuses hard links and device nodes on its own fd
(:meth:`FileMethods._chown_fd`), and the mounts act on ``/proc/self/fd/N`` of what openat2 found.

The system calls, as strace shows them (bench/floor.py replays the same list)::

    openat2(parent, O_PATH|O_DIRECTORY) mkdirat openat(name, O_PATH|O_NOFOLLOW|O_DIRECTORY)
    fchmodat2(fd, AT_EMPTY_PATH) close close                                        # mkdir
    openat2(path, O_PATH) [fstat if safe] fchownat(fd, AT_EMPTY_PATH) close          # chown
    openat2(path, O_PATH) openat2(path, O_PATH) mount(fd S, fd T, MS_BIND) close close  # bind
    openat2(path, O_PATH) mount(NULL, fd T, MS_SHARED) close                         # make

:meth:`make_stores` runs that for each of its paths in one loop (what the stores share looked up
once), going on after a failure as :func:`~daemonstore.host.make_stores_by_calls` does;
:meth:`make_store` is the loop over one path.

A path the fused code does not take as it is (relative, a trailing ``/``, a last component
``.`` or ``..``) goes through :func:`~daemonstore.host.make_store_by_steps`, the definition.
tests/kernel/test_make_store.py checks both against each other, a failure at every step
included.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from daemonstore.host import make_store_by_steps
from daemonstore.kernel.files import FileMethods
from daemonstore.kernel.syscalls import last_error
from daemonstore.kernel.uapi import O_DIRECTORY, O_PATH, OPEN_HOW_SIZE_VER0
from daemonstore.mountflags import MS_FLAGS as MS

_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_MS_BIND, _MS_SHARED = MS["MS_BIND"], MS["MS_SHARED"]
_PARENT, _PATH = O_PATH | O_DIRECTORY, O_PATH


class StoreMethods(FileMethods):
    """:meth:`make_store` and :meth:`make_stores` (host.py) for KernelHost."""

    def make_store(self, path: str, mode: int, uid: int, gid: int, *,
                   safe: bool = False) -> None:
        failures = self.make_stores((path,), mode, uid, gid, safe=safe)
        if failures:
            raise failures[0]

    def make_stores(self, paths: Sequence[str], mode: int, uid: int, gid: int, *,
                    safe: bool = False) -> dict[int, OSError]:
        # what every store shares is looked up once (startup's missing stores of a base come in
        # one call, issue 14 item 6); each store still resolves every path afresh
        calls = self._calls
        hows = calls.hows_safe if safe else calls.hows_in_root
        how_parent = hows.get(_PARENT) or calls.how(_PARENT, 0, safe)
        how_path = hows.get(_PATH) or calls.how(_PATH, 0, safe)
        openat2, nr, mount, close = calls.openat2, calls.nr_openat2, calls.mount, os.close
        open_again, mkdir_in, chown_fd = self._open_again, self._mkdir_in, self._chown_fd
        root_fd = self._current_ns.root_fd
        failures: dict[int, OSError] = {}
        for index, path in enumerate(paths):
            head, _, name = path.rpartition("/")
            if path[:1] != "/" or name in ("", ".", ".."):
                try:
                    make_store_by_steps(self, path, mode, uid, gid, safe=safe)
                except OSError as exc:
                    failures[index] = exc
                continue
            # as KernelHost._open encodes them: relative to root_fd, the root itself as "."
            rel = path.lstrip("/").encode(_FS_ENCODING, _FS_ERRORS)
            parent_rel = head.lstrip("/").encode(_FS_ENCODING, _FS_ERRORS) or b"."
            done = 0
            try:
                # mkdir: the parent (an error names it, as mkdir's does), then mkdirat in it
                fd = openat2(nr, root_fd, parent_rel, how_parent, OPEN_HOW_SIZE_VER0)
                if fd < 0:
                    fd = open_again(parent_rel, how_parent, head or "/")
                try:
                    mkdir_in(fd, name.encode(_FS_ENCODING, _FS_ERRORS), mode, path)
                finally:
                    close(fd)
                done = 1
                # chown 0:0 (or uid:gid) of what the path reaches now
                fd = openat2(nr, root_fd, rel, how_path, OPEN_HOW_SIZE_VER0)
                if fd < 0:
                    fd = open_again(rel, how_path, path)
                try:
                    chown_fd(fd, uid, gid, safe, path)
                finally:
                    close(fd)
                done = 2
                # bind onto itself: source and target each resolved, as bind(path, path) does
                sfd = openat2(nr, root_fd, rel, how_path, OPEN_HOW_SIZE_VER0)
                if sfd < 0:
                    sfd = open_again(rel, how_path, path)
                try:
                    fd = openat2(nr, root_fd, rel, how_path, OPEN_HOW_SIZE_VER0)
                    if fd < 0:
                        fd = open_again(rel, how_path, path)
                    try:
                        if mount(b"/proc/self/fd/%d" % sfd, b"/proc/self/fd/%d" % fd, None,
                                 _MS_BIND, None):
                            raise last_error(path)
                    finally:
                        close(fd)
                finally:
                    close(sfd)
                done = 3
                # make-shared: resolved again, so it reaches the bind just made
                fd = openat2(nr, root_fd, rel, how_path, OPEN_HOW_SIZE_VER0)
                if fd < 0:
                    fd = open_again(rel, how_path, path)
                try:
                    if mount(None, b"/proc/self/fd/%d" % fd, None, _MS_SHARED, None):
                        raise last_error(path)
                finally:
                    close(fd)
            except OSError as exc:
                exc.steps_done = done  # type: ignore[attr-defined]
                failures[index] = exc
        return failures
