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
from daemonstore.mountinfo import parse, rebase

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
    def _sandbox_mounts(self) -> dict[int, str]:
        """mount id -> namespace name, for every mount of the sandbox in every namespace."""
        ids: dict[int, str] = {}
        for name in self._ns:
            for entry in parse(self.mountinfo(name)):
                ids.setdefault(entry.mount_id, name)
        return ids

    def _namespace_names(self) -> dict[int, str]:
        return {os.fstat(ns.ns_fd).st_ino: name for name, ns in self._ns.items()
                if ns.ns_fd >= 0}

    def _sandbox_path(self, link: str) -> str:
        if link == self._root:
            return "/"
        if link.startswith(self._root + "/"):
            return link[len(self._root):]
        return link

    def open_files(self) -> list[OpenFile]:
        ids = self._sandbox_mounts()
        found: list[OpenFile] = []
        me = os.getpid()
        for name, held in self._held.items():
            mnt_id = fd_mount_id(me, held.fd)
            found.append(OpenFile(name, held.namespace, "hold", held.path, mnt_id, me,
                                  attached=mnt_id in ids))
        ns_names = self._namespace_names()
        for pid in _pids():
            if pid == me:
                continue  # this host's own fds: the sandbox roots, detached trees, the holds
            try:
                ns_ino = os.stat(f"/proc/{pid}/ns/mnt").st_ino
                if ns_ino not in ns_names:
                    # a namespace this host did not make (a daemon's, made by minijail): its
                    # mounts of the sandbox, as that process sees them
                    ns_names[ns_ino] = f"mnt:[{ns_ino}]"
                    text = rebase(_read(f"/proc/{pid}/mountinfo"), self._root)
                    for entry in parse(text):
                        ids.setdefault(entry.mount_id, ns_names[ns_ino])
                comm = _read(f"/proc/{pid}/comm").strip()
                refs = _references(pid)
            except OSError:
                continue  # the process went away meanwhile
            for how, mnt_id, link in refs:
                if mnt_id in ids:
                    found.append(OpenFile(f"pid {pid} ({comm})", ns_names[ns_ino], how,
                                          self._sandbox_path(link), mnt_id, pid))
        return found

    def end_holder(self, found: OpenFile) -> None:
        if found.pid is None or found.pid == os.getpid():
            if found.how != "hold" or found.holder not in self._held:
                raise os_error(errno.ESRCH, found.holder)
            self.release(found.holder)
            return
        pid = found.pid
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


def _link_mount_id(link: str) -> int:
    """The mount a /proc magic link (cwd, root) stands on: open it O_PATH, read our fdinfo."""
    fd = os.open(link, O_PATH | O_CLOEXEC)
    try:
        return fd_mount_id(os.getpid(), fd)
    finally:
        os.close(fd)


def _references(pid: int) -> list[tuple[str, int, str]]:
    """(how, mount id, readlink) of each fd, the cwd and the root of process PID."""
    refs: list[tuple[str, int, str]] = []
    base = f"/proc/{pid}"
    for how, link in (("cwd", f"{base}/cwd"), ("root", f"{base}/root")):
        try:
            refs.append((how, _link_mount_id(link), os.readlink(link)))
        except OSError:
            continue
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        return refs
    for fd in fds:
        try:
            target = os.readlink(f"{base}/fd/{fd}")
            refs.append((f"fd {fd}", fd_mount_id(pid, int(fd)), target))
        except (OSError, ValueError):
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
