"""Kernel layer, the Host interface's namespace methods on the real kernel: mount namespaces by
name (unshare, setns), each with its own fd of the sandbox root; mountinfo seen from any of them;
a namespace pinned on a file and opened again from it (how session_manager keeps mnt_chrome).
"""

from __future__ import annotations

import errno
import fcntl
import os

from daemonstore.host import Propagation
from daemonstore.kernel.guards import check_tmpfs_mount_point
from daemonstore.kernel.mounts import propagation_flag
from daemonstore.kernel.resolve import Namespace, Resolver, fd_path
from daemonstore.kernel.syscalls import mount, os_error, read_all, setns, unshare
from daemonstore.kernel.uapi import (
    CLONE_FS,
    CLONE_NEWNS,
    NS_GET_NSTYPE,
    O_CLOEXEC,
    O_DIRECTORY,
    O_PATH,
)
from daemonstore.mountflags import MS_FLAGS as MS
from daemonstore.mountinfo import rebase


class NamespaceMethods(Resolver):
    """Host's namespace methods (host.py). ``setns(CLONE_NEWNS)`` resets the cwd to the
    namespace's root, so every switch restores the caller's cwd."""

    def namespaces(self) -> list[str]:
        return list(self._ns)

    def current_namespace(self) -> str:
        return self._current

    def own_thread(self) -> None:
        """Called first in a thread that will do all of this host's work (hostlane.py):
        ``unshare(CLONE_FS)``, because ``setns(CLONE_NEWNS)`` is EINVAL for a thread sharing
        its root and cwd with another (every Python thread does: CLONE_FS)."""
        unshare(CLONE_FS)

    def new_namespace(self, name: str, propagation: Propagation | str | None = None) -> None:
        if name in self._ns:
            raise os_error(errno.EEXIST, name)
        flag = None
        if propagation is not None and propagation != "unchanged":
            flag = propagation_flag(propagation)  # validate before unsharing
        root_fd = self._unshare()
        # thread-self: the namespace of this thread (a Host lane thread may be elsewhere than
        # the main one; hostlane.py)
        ns_fd = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | O_CLOEXEC)
        self._ns[name] = Namespace(ns_fd, root_fd)
        self._current = name
        if flag is not None:
            # like `unshare -m --propagation X`, but on the sandbox root only: the rest of this
            # process's tree is private already (run_in_sandbox made "/" rprivate)
            mount(None, fd_path(root_fd), None, flag | MS["MS_REC"], filename="/")

    def make_whole_tree(self, propagation: Propagation | str) -> None:
        """Kernel only (not in the Host interface): minijail's ``-K`` remount,
        ``mount(NULL, "/", NULL, MS_REC | mode)`` (libminijail.c ``remount_propagation``), on the
        whole tree of the current namespace -- the process's ``/``, not only the sandbox root.
        ``EPERM`` in the namespace this host started in: only a namespace it made is changed,
        never the caller's (which may be the machine's initial one)."""
        flag = propagation_flag(propagation)
        if self._current == next(iter(self._ns)):
            raise os_error(errno.EPERM, "/")
        mount(None, "/", None, flag | MS["MS_REC"], filename="/")

    def _unshare(self) -> int:
        """unshare(CLONE_NEWNS) and return an O_PATH fd of the sandbox root's copy.

        copy_mnt_ns() moves the caller's cwd onto the copy of its mount (fs/namespace.c), so with
        the cwd on the sandbox root, "." afterwards is exactly the copy of that mount, even if the
        root has been overmounted meanwhile."""
        cwd = _getcwd()
        os.fchdir(self._root_fd)
        try:
            unshare(CLONE_NEWNS)
            return os.open(".", O_PATH | O_DIRECTORY | O_CLOEXEC)
        finally:
            _restore_cwd(cwd)

    def use_namespace(self, name: str) -> None:
        if name not in self._ns:
            raise os_error(errno.ENOENT, name)
        self._setns(name)
        self._current = name

    def _setns(self, name: str) -> None:
        cwd = _getcwd()  # setns(CLONE_NEWNS) resets cwd and root to the namespace's root
        setns(self._ns[name].ns_fd, CLONE_NEWNS, filename=name)
        _restore_cwd(cwd)

    def mountinfo(self, namespace: str | None = None) -> str:
        name = self._current if namespace is None else namespace
        if name not in self._ns:
            raise os_error(errno.ENOENT, name)
        if name == self._current:
            text = _read_mountinfo()
        else:
            self._setns(name)
            try:
                text = _read_mountinfo()
            finally:
                self._setns(self._current)
        return rebase(text, self._root)

    def pin_namespace(self, name: str, path: str) -> None:
        """``mount --bind /proc/self/ns/mnt PATH`` with namespace ``name``'s nsfs fd as the
        source; the kernel's mnt_ns_loop() check gives EINVAL unless ``name`` is newer than the
        current namespace."""
        if name not in self._ns:
            raise os_error(errno.ENOENT, name)
        with self._opened(path, O_PATH, safe=False) as fd:
            mount(fd_path(self._ns[name].ns_fd), fd_path(fd), None, MS["MS_BIND"], filename=path)

    def open_pinned_namespace(self, path: str, name: str) -> None:
        """Open the namespace file bound at ``path`` and register it as ``name``."""
        with self._opened(path, os.O_RDONLY, safe=False) as fd:
            try:
                is_mnt_ns = fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNS
            except OSError:  # ENOTTY: not an nsfs file at all
                is_mnt_ns = False
            if not is_mnt_ns:
                raise os_error(errno.EINVAL, path)
            ino = os.fstat(fd).st_ino
            if name in self._ns:
                if os.fstat(self._ns[name].ns_fd).st_ino != ino:
                    raise os_error(errno.EEXIST, name)
                return
            root_fd = self._root_fd_of(fd, ino)
            self._ns[name] = Namespace(os.dup(fd), root_fd)

    def _root_fd_of(self, ns_fd: int, ino: int) -> int:
        """An O_PATH fd of the sandbox root inside the namespace ``ns_fd``: shared with the name
        we already know it by, else opened there (and checked to be our tmpfs) via setns."""
        for ns in self._ns.values():
            if os.fstat(ns.ns_fd).st_ino == ino:
                return os.dup(ns.root_fd)
        cwd = _getcwd()
        setns(ns_fd, CLONE_NEWNS)
        try:
            root_fd = os.open(self._root, O_PATH | O_DIRECTORY | O_CLOEXEC)
            try:
                if self._root != "/":  # a sandbox root must be our tmpfs in there too
                    check_tmpfs_mount_point(self._root, root_fd)
            except BaseException:
                os.close(root_fd)
                raise
            return root_fd
        finally:
            setns(self._ns[self._current].ns_fd, CLONE_NEWNS)
            _restore_cwd(cwd)


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


def _restore_cwd(cwd: str | None) -> None:
    try:
        os.chdir(cwd or "/")
    except OSError:
        os.chdir("/")


def _read_mountinfo() -> str:
    # plain open/read/close: a text-mode file object adds an fstat, an ioctl and an lseek
    # thread-self, not self: the mount namespace of this thread (hostlane.py)
    fd = os.open("/proc/thread-self/mountinfo", os.O_RDONLY | O_CLOEXEC)
    try:
        data = read_all(fd, 1 << 17)
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")
