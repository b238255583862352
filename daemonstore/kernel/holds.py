"""Kernel layer, the Host interface's busy-mount methods on the real kernel: files held open by
name (the fd stays open in this process), every reference that pins a sandbox mount found through
``/proc`` (each process's fds, cwd and root, in every namespace), ending a holder as
``process_killer --mount_holders`` does, and ``syncfs``.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass

from daemonstore.host import OpenFile
from daemonstore.kernel.resolve import Resolver
from daemonstore.kernel.syscalls import os_error, syncfs
from daemonstore.kernel.uapi import O_CLOEXEC, O_PATH
from daemonstore.mountinfo import parse

#: how long end_holder waits for a killed process to close its files (it exits at once on
#: SIGKILL unless stuck in uninterruptible sleep)
KILL_WAIT_SECONDS = 5.0


@dataclass
class KernelHold:
    fd: int
    namespace: str
    path: str


class HoldMethods(Resolver):
    """Host's hold/release/open_files/end_holder/syncfs (host.py)."""

    _held: dict[str, KernelHold]

    def _open_no_device(self, path: str, flags: int) -> int:
        raise NotImplementedError

    def hold(self, name: str, path: str, *, safe: bool = False) -> None:
        if name in self._held:
            raise os_error(errno.EEXIST, name)
        # O_NONBLOCK: opening a fifo for reading must not wait for a writer; no effect on
        # regular files and directories (open(2))
        flags = os.O_RDONLY | os.O_NONBLOCK | O_CLOEXEC
        fd = self._open_no_device(path, flags) if safe else self._open(path, flags, safe=False)
        self._held[name] = KernelHold(fd, self._current, path)

    def release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            raise os_error(errno.EBADF, name)
        os.close(held.fd)

    def _release_all(self) -> None:
        for name in list(self._held):
            self.release(name)

    def syncfs(self, path: str, *, safe: bool = False) -> None:
        fd = self._open(path, O_PATH, safe=safe)
        try:
            # syncfs needs a real fd (an O_PATH one is EBADF): reopen exactly that dentry
            real = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | O_CLOEXEC)
        finally:
            os.close(fd)
        try:
            syncfs(real, filename=path)
        finally:
            os.close(real)

    # ---- who pins what -----------------------------------------------------------------------
    def _mount_ids(self, namespace: str) -> set[int]:
        return {entry.mount_id for entry in parse(self.mountinfo(namespace))}

    def _namespace_names(self) -> dict[int, str]:
        return {os.fstat(ns.ns_fd).st_ino: name for name, ns in self._ns.items()
                if ns.ns_fd >= 0}

    def _in_sandbox(self, link: str) -> str | None:
        """A /proc link target as a sandbox path, or None when it lies outside the sandbox."""
        if link == self._root:
            return "/"
        if self._root == "/" and link.startswith("/"):
            return link
        if link.startswith(self._root + "/"):
            return link[len(self._root):]
        return None

    def open_files(self) -> list[OpenFile]:
        """This process's holds, then every other process's fds, cwd and root whose target
        ``/proc`` shows inside the sandbox (the ``readlink`` of a file on a detached mount is
        relative to that mount, so such references of other processes are not found; this
        process's own holds are, by name). One pass over /proc; mountinfo is read only for the
        namespaces this process holds files in."""
        found: list[OpenFile] = []
        me = os.getpid()
        attached_ids: dict[str, set[int]] = {}
        for name, held in self._held.items():
            if held.namespace not in attached_ids:
                attached_ids[held.namespace] = self._mount_ids(held.namespace)
            mnt_id = fd_mount_id(me, held.fd)
            found.append(OpenFile(name, held.namespace, "hold", held.path, mnt_id, me,
                                  attached=mnt_id in attached_ids[held.namespace]))
        ns_names = self._namespace_names()
        for pid in _pids():
            if pid == me:
                continue  # this host's own fds: the sandbox roots, detached trees, the holds
            try:
                ns_ino = os.stat(f"/proc/{pid}/ns/mnt").st_ino
                refs = _references(pid)
                inside = [(how, link, path) for how, link, target in refs
                          if (path := self._in_sandbox(target)) is not None]
                if not inside:
                    continue
                comm = _read(f"/proc/{pid}/comm").strip()
                for how, link, path in inside:
                    found.append(OpenFile(f"pid {pid} ({comm})",
                                          ns_names.get(ns_ino, f"mnt:[{ns_ino}]"), how, path,
                                          _mount_id_of(pid, how, link), pid))
            except OSError:
                continue  # the process went away meanwhile
        return found

    def end_holder(self, found: OpenFile) -> None:
        if found.pid is None or found.pid == os.getpid():
            if found.how != "hold" or found.holder not in self._held:
                raise os_error(errno.ESRCH, found.holder)
            self.release(found.holder)
            return
        pid = found.pid
        link = f"/proc/{pid}/{found.how.replace(' ', '/')}"
        try:
            # the same process still pins the same mount: a pid reused since the scan, or a
            # file closed meanwhile, is left alone
            if _mount_id_of(pid, found.how, link) != found.mnt_id:
                raise os_error(errno.ESRCH, found.holder)
        except FileNotFoundError:
            raise os_error(errno.ESRCH, found.holder) from None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            raise os_error(errno.ESRCH, found.holder) from None
        _wait_gone(pid)


def _pids() -> list[int]:
    return sorted(int(d) for d in os.listdir("/proc") if d.isdigit())


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def fd_mount_id(pid: int, fd: int) -> int:
    """``mnt_id:`` of /proc/PID/fdinfo/FD: the mount the fd lives on (mountinfo field 1)."""
    for line in _read(f"/proc/{pid}/fdinfo/{fd}").splitlines():
        if line.startswith("mnt_id:"):
            return int(line.split()[1])
    return 0


def _mount_id_of(pid: int, how: str, link: str) -> int:
    """The mount a reference stands on: fdinfo for an fd; for cwd and root, the magic link
    opened O_PATH and our own fdinfo of that."""
    if how.startswith("fd "):
        return fd_mount_id(pid, int(how[3:]))
    fd = os.open(link, O_PATH | O_CLOEXEC)
    try:
        return fd_mount_id(os.getpid(), fd)
    finally:
        os.close(fd)


def _references(pid: int) -> list[tuple[str, str, str]]:
    """(how, /proc link, its target) for each fd, the cwd and the root of process PID."""
    refs: list[tuple[str, str, str]] = []
    base = f"/proc/{pid}"
    for how in ("cwd", "root"):
        try:
            refs.append((how, f"{base}/{how}", os.readlink(f"{base}/{how}")))
        except OSError:
            continue
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        return refs
    for fd in fds:
        try:
            refs.append((f"fd {fd}", f"{base}/fd/{fd}", os.readlink(f"{base}/fd/{fd}")))
        except OSError:
            continue  # closed meanwhile
    return refs


def _wait_gone(pid: int) -> None:
    """Until PID has exited (its files closed): reaped if it is our child, else until /proc says
    it is a zombie or gone."""
    try:
        os.waitpid(pid, 0)
        return
    except ChildProcessError:
        pass
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            state = _read(f"/proc/{pid}/stat").rpartition(")")[2].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise os_error(errno.EBUSY, f"pid {pid}")
