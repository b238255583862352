"""Kernel layer: :class:`KernelHost`, the real kernel behind the Host interface (host.py),
confined to a tmpfs sandbox root.

Its methods come by concern from :mod:`~daemonstore.kernel.files`,
:mod:`~daemonstore.kernel.mounts`, :mod:`~daemonstore.kernel.namespaces` and
:mod:`~daemonstore.kernel.store` (startup's fused ``make_store``), over the confined
path resolution of :mod:`~daemonstore.kernel.resolve`; this module holds the constructor (the
safety guards run first) and the lifetime of the fds it holds.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from collections.abc import Callable

from daemonstore.kernel.files import FileMethods
from daemonstore.kernel.guards import (
    SandboxRefused,
    check_private_namespace,
    check_sandbox_root,
)
from daemonstore.kernel.holds import HoldMethods
from daemonstore.kernel.local import watch_mount_table
from daemonstore.kernel.mounts import MountMethods
from daemonstore.kernel.namespaces import NamespaceMethods
from daemonstore.kernel.resolve import Namespace, fd_path
from daemonstore.kernel.store import StoreMethods
from daemonstore.kernel.syscalls import BoundCalls
from daemonstore.kernel.uapi import O_CLOEXEC, O_DIRECTORY, O_PATH, STATX_SIZE

__all__ = ["KernelHost"]


class KernelHost(StoreMethods, FileMethods, MountMethods, NamespaceMethods, HoldMethods):
    """The real kernel behind the Host interface, on ``/`` or confined to a tmpfs sandbox root.

    ``root`` is the HOST path of the root; interface paths are root-absolute (``/`` is
    ``root``). The constructor refuses (:class:`SandboxRefused`) in the machine's initial mount
    namespace unless ``system`` (the ``--system`` interlock), and a sandbox root (anything but
    ``/``) that is not a private tmpfs mount point (guards.py). Not thread-safe:
    unshare(CLONE_NEWNS) and setns(CLONE_NEWNS) need a single-threaded caller anyway.
    """

    kind = "kernel"

    def __init__(self, root: str, *, system: bool = False) -> None:
        if not system:
            check_private_namespace()  # first, before anything is opened (safety rule 1)
        if not os.path.isabs(root):
            raise SandboxRefused(f"root must be an absolute path: {root!r}")
        root_fd = os.open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)
        try:
            host_root = os.readlink(fd_path(root_fd))
            if host_root != "/":  # "/" is the real system; anything else is a sandbox
                check_sandbox_root(host_root, root_fd)
            ns_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | O_CLOEXEC)
        except BaseException:
            os.close(root_fd)
            raise
        self._root = host_root
        self._ns = {"init": Namespace(ns_fd, root_fd)}
        self._current = "init"
        self._calls = BoundCalls()
        self._detached = {}  # handle -> open_tree fd
        self._held = {}  # hold name -> KernelHold (kernel/holds.py)
        self._handles = itertools.count(1)
        self._statx_buf = ctypes.create_string_buffer(STATX_SIZE)
        self._statx_addr = ctypes.addressof(self._statx_buf)

    @property
    def root(self) -> str:
        """Host path of the sandbox root (canonical, as /proc/self/mountinfo shows it)."""
        return self._root

    def watch_mounts(self, notify: Callable[[], None]) -> Callable[[], None]:
        """Host.watch_mounts: ``notify()`` on the running asyncio loop after each change to the
        current namespace's mount table, by this host or by anyone (kernel/local.py: POLLPRI on
        /proc/self/mountinfo, opened now, in the current namespace)."""
        return watch_mount_table(notify)

    def close(self) -> None:
        """Close the detached trees, namespace and root fds (namespaces and detached trees die
        with their last reference)."""
        self._release_all()
        for handle in list(self._detached):
            self.drop_detached(handle)
        for ns in self._ns.values():
            for fd in (ns.root_fd, ns.ns_fd):
                if fd >= 0:
                    os.close(fd)
            ns.root_fd = ns.ns_fd = -1

    def __enter__(self) -> KernelHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KernelHost({self._root!r}, current={self._current!r})"
