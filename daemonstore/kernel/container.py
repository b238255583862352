"""Kernel layer, a throw-away container: a program run with a fresh tmpfs as ``/`` (pivot_root), in
its own mount and PID namespaces, for the system world (:mod:`daemonstore.testing.system`), where
real daemons see ``/run/daemon-store/...`` at its real path.

The process tree, every level a forked child of the caller (which is never touched)::

    caller ── outer      unshare(CLONE_NEWNS | CLONE_NEWPID), "/" made rprivate (the guard
              │          checks first that this is not the machine's initial namespace); waits
              └─ init    PID 1 of the new PID namespace: reaps orphans; when it exits the kernel
                 │       kills whatever is left in the namespace, so nothing outlives it
                 └─ program   unshare(CLONE_NEWNS) again, then the container below, then exec

The program gets a mount namespace of its own, not init's, because daemonstore's commands ask
"am I in the initial mount namespace?" by comparing with PID 1's (kernel/guards.py): inside the
container PID 1 is init, whose namespace is not the container's, so the commands run with
default paths and no ``--system``, as in any container.

The root: a tmpfs ``container`` on a fresh directory (which therefore stays empty on the host),
fresh tmpfs ``/run``, ``/home``, ``/tmp``, ``/var`` (mounted first, so a bound path below one of
them, e.g. a checkout in /tmp, lands on top), ``/usr`` and ``/bin``, ``/lib``... (or their
symlinks) and :attr:`ContainerSpec.ro_binds` bound read-only at their own paths, ``/proc`` of the
new PID namespace, a ``/dev`` of five character devices, ``/etc`` with only passwd, group and
machine-id. Then ``pivot_root(".", ".")`` and a lazy detach of the old root: nothing of the host
is reachable but what was bound.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from daemonstore.errors import DaemonStoreError
from daemonstore.kernel.guards import check_private_namespace
from daemonstore.kernel.syscalls import mount, pivot_root, umount2, unshare
from daemonstore.kernel.uapi import CLONE_NEWNS, CLONE_NEWPID, MNT_DETACH
from daemonstore.mountflags import MS_FLAGS as MS

__all__ = ["BASE_GROUP", "BASE_PASSWD", "CONTAINER_SOURCE", "Container", "ContainerError",
           "ContainerSpec", "interpreter_binds", "start_container"]

#: tmpfs source of the container's root, as mountinfo shows it
CONTAINER_SOURCE = "container"

#: the accounts every container has (dbus-daemon --system drops to messagebus; chronos owns the
#: user's home on ChromeOS; nobody is the unprivileged caller the D-Bus policies refuse)
BASE_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh",
    "messagebus:x:100:101::/nonexistent:/usr/sbin/nologin",
    "chronos:x:1000:1000::/home/chronos/user:/bin/sh",
    "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin",
)
BASE_GROUP = (
    "root:x:0:",
    "messagebus:x:101:",
    "chronos:x:1000:",
    "chronos-access:x:1001:",
    "nogroup:x:65534:",
)
#: the host's top-level directories (or usr-merge symlinks) a program needs to run
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9))


class ContainerError(DaemonStoreError, RuntimeError):
    """The container could not be built or its program not started (the child's traceback)."""


@dataclass(frozen=True)
class ContainerSpec:
    """What goes into the root besides /usr and the system directories."""

    #: host paths bound read-only at the same path (one under /usr, or under another, is skipped)
    ro_binds: tuple[str, ...] = ()
    passwd: tuple[str, ...] = BASE_PASSWD
    group: tuple[str, ...] = BASE_GROUP
    #: the machine-id dbus-daemon reads
    machine_id: str = "0123456789abcdef0123456789abcdef"


def interpreter_binds(*module_files: str) -> tuple[str, ...]:
    """The paths this Python needs inside: its prefixes (a venv and the interpreter it came
    from) and the directory holding each package of ``module_files`` (an editable install lives
    outside site-packages)."""
    wanted = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    wanted += [os.path.dirname(os.path.dirname(os.path.abspath(f))) for f in module_files]
    return _outermost(os.path.realpath(p) for p in wanted)


def _outermost(candidates: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for path in sorted(set(candidates)):
        if path == "/usr" or path.startswith("/usr/"):
            continue  # /usr is bound as a whole
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in out):
            continue
        out.append(path)
    return tuple(out)


@dataclass
class Container:
    """The caller's handle: ``pid`` is the program's (host) pid, ``init_pid`` the PID
    namespace's init, ``outer_pid`` the direct child this process waits for."""

    outer_pid: int
    init_pid: int
    pid: int
    pid_namespace: int  #: inode of the container's PID namespace
    root_dir: str       #: the host directory the tmpfs was mounted on (empty on the host)
    status: int | None = field(default=None)

    def root_path(self, path: str = "/") -> str:
        """``/proc/<pid>/root<path>``: the container's file tree as the program sees it (open
        it with :class:`~daemonstore.kernel.readonly.ReadOnlyRoot`, never by plain path: an
        absolute symlink met on the way would resolve on the host)."""
        return f"/proc/{self.pid}/root{path}"

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the container to end; its program's exit code. TimeoutError if it does
        not within ``timeout`` seconds."""
        if self.status is None:
            fd = os.pidfd_open(self.outer_pid)
            try:
                ready, _, _ = select.select([fd], [], [], timeout)
            finally:
                os.close(fd)
            if not ready:
                raise TimeoutError(f"container {self.pid} still runs after {timeout} s")
            self.status = os.waitpid(self.outer_pid, 0)[1]
            _remove_root_dir(self.root_dir)
        return os.waitstatus_to_exitcode(self.status)

    def kill(self) -> None:
        """SIGKILL the namespace's init: the kernel then kills every process of the container
        (pid_namespaces(7)). Only while the outer child, init's parent, is not reaped: until
        then init's pid cannot have been reused."""
        if self.status is None:
            try:
                os.kill(self.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def processes(self) -> list[int]:
        """Host pids of the processes still in the container's PID namespace."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if os.stat(f"/proc/{name}/ns/pid").st_ino == self.pid_namespace:
                    found.append(int(name))
            except OSError:
                continue  # gone meanwhile
        return found


def start_container(spec: ContainerSpec, argv: Sequence[str], env: dict[str, str], *,
                    pass_fds: Sequence[int] = (), log: str = "/tmp/container.log") -> Container:
    """Build a container (module docstring) and exec ``argv`` in it with ``env``; the fds
    ``pass_fds`` stay open in the program (and closed in the intermediate processes, so the
    caller sees EOF on a channel when the program dies); its stdout and stderr go to ``log``
    inside. Returns once the exec happened; :class:`ContainerError` with the child's traceback
    if anything before it failed (nothing is left then)."""
    root_dir = tempfile.mkdtemp(prefix="daemonstore-container-")
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)  # closed by the exec: EOF means it happened
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or buffered output would be written twice
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _outer(spec, root_dir, list(argv), env, list(pass_fds), log, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    ids = dict(line[4:].split("=", 1) for line in report.splitlines() if line.startswith("PID "))
    error = "".join(line[4:] + "\n" for line in report.splitlines() if line.startswith("ERR "))
    if error or "program" not in ids:
        status = os.waitpid(pid, 0)[1]
        _remove_root_dir(root_dir)
        raise ContainerError(error or f"the container's child exited with status "
                             f"{os.waitstatus_to_exitcode(status)} before its program started")
    return Container(pid, int(ids["init"]), int(ids["program"]), int(ids["pidns"]), root_dir)


# ---- the children ----------------------------------------------------------------------------


def _fail(report_fd: int) -> NoReturn:
    text = "".join(f"ERR {line}\n" for line in traceback.format_exc().splitlines())
    try:
        os.write(report_fd, text.encode())
    finally:
        os._exit(127)


def _outer(spec: ContainerSpec, root_dir: str, argv: list[str], env: dict[str, str],
           pass_fds: list[int], log: str, report_fd: int) -> NoReturn:
    try:
        _close_fds_but(report_fd, *pass_fds)  # the caller's other fds (another world's channel)
        before = os.stat("/proc/self/ns/mnt").st_ino
        unshare(CLONE_NEWNS | CLONE_NEWPID)
        if os.stat("/proc/self/ns/mnt").st_ino == before:
            raise ContainerError("unshare(CLONE_NEWNS) did not change the mount namespace")
        check_private_namespace()
        # rprivate before anything is mounted: nothing below may propagate to the host
        mount(None, "/", None, MS["MS_REC"] | MS["MS_PRIVATE"])
        pid = os.fork()  # the first child in the new PID namespace: its init
        if pid == 0:
            _init(spec, root_dir, argv, env, pass_fds, log, report_fd)
        for fd in (*pass_fds, report_fd):
            os.close(fd)
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) & 0xFF)
    except BaseException:
        _fail(report_fd)


def _close_fds_but(*keep: int) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _init(spec: ContainerSpec, root_dir: str, argv: list[str], env: dict[str, str],
          pass_fds: list[int], log: str, report_fd: int) -> NoReturn:
    try:
        program = os.fork()
        if program == 0:
            _program(spec, root_dir, argv, env, pass_fds, log, report_fd)
        for fd in (*pass_fds, report_fd):
            os.close(fd)
        code = 0
        while True:  # reap every orphan until the program itself ends
            pid, status = os.waitpid(-1, 0)
            if pid == program:
                code = os.waitstatus_to_exitcode(status)
                break
        os._exit(code & 0xFF)
    except BaseException:
        _fail(report_fd)


def _program(spec: ContainerSpec, root_dir: str, argv: list[str], env: dict[str, str],
             pass_fds: list[int], log: str, report_fd: int) -> NoReturn:
    try:
        # One CPU for the container (and all it runs), as run_in_sandbox does: Linux 6.18 hands
        # out namespace ids in per-CPU batches, and binding a namespace file (mnt_chrome, a
        # guest's sign-in) is EINVAL unless ids grow in creation order (kernel/sandbox.py).
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        # the host's /proc is still mounted: it names this process, init and the namespace
        # with host pids
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        pidns = os.stat("/proc/self/ns/pid").st_ino
        os.write(report_fd, (f"PID init={status['PPid'].strip()}\n"
                             f"PID pidns={pidns}\n").encode())
        before = os.stat("/proc/self/ns/mnt").st_ino
        unshare(CLONE_NEWNS)
        if os.stat("/proc/self/ns/mnt").st_ino == before:
            raise ContainerError("unshare(CLONE_NEWNS) did not change the mount namespace")
        check_private_namespace()
        _check_nothing_shared()
        build_root(spec, root_dir)
        enter_root(root_dir)
        _redirect_stdio(log)
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        os.write(report_fd, f"PID program={status['Pid'].strip()}\n".encode())
        os.execve(argv[0], argv, env)
    except BaseException:
        _fail(report_fd)


def _check_nothing_shared() -> None:
    """Belt and braces after the rprivate: no mount of this namespace may have peers."""
    with open("/proc/self/mountinfo") as f:
        shared = [line.split()[4] for line in f if " shared:" in line.split(" - ")[0]]
    if shared:
        raise ContainerError(f"mounts still shared after make-rprivate: {shared[:5]}")


def build_root(spec: ContainerSpec, new: str) -> None:
    """The container's root on ``new`` (module docstring); in a private namespace only."""
    check_private_namespace()
    mount(CONTAINER_SOURCE, new, "tmpfs", 0, "mode=0755")
    for d in ("usr", "proc", "run", "home", "tmp", "var", "etc", "dev", "root"):
        os.mkdir(f"{new}/{d}", 0o755)
    for d in ("run", "home", "tmp", "var"):
        mount(d, f"{new}/{d}", "tmpfs", 0, "mode=0755")
    os.chmod(f"{new}/tmp", 0o1777)
    _ro_bind("/usr", new)
    for d in SYSTEM_DIRS:
        if os.path.islink(f"/{d}"):
            os.symlink(os.readlink(f"/{d}"), f"{new}/{d}")
        elif os.path.isdir(f"/{d}"):
            _ro_bind(f"/{d}", new)
    for path in _outermost(spec.ro_binds):
        _ro_bind(path, new)
    for name, major, minor in DEVICES:
        os.mknod(f"{new}/dev/{name}", 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(f"{new}/dev/{name}", 0o666)  # mknod's mode went through the umask
    os.symlink("/proc/self/fd", f"{new}/dev/fd")
    for name, lines in (("passwd", spec.passwd), ("group", spec.group),
                        ("machine-id", (spec.machine_id,))):
        with open(f"{new}/etc/{name}", "w") as f:
            f.write("".join(line + "\n" for line in lines))


def _ro_bind(path: str, new: str) -> None:
    os.makedirs(new + path, 0o755, exist_ok=True)
    mount(path, new + path, None, MS["MS_BIND"] | MS["MS_REC"])
    mount(None, new + path, None, MS["MS_BIND"] | MS["MS_REMOUNT"] | MS["MS_RDONLY"])


def enter_root(new: str) -> None:
    """``pivot_root(".", ".")`` then detach the old root stacked on ``/`` (runc's way: no
    directory for the old root is needed); mount the PID namespace's /proc."""
    os.chdir(new)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")
    mount("proc", "/proc", "proc", MS["MS_NOSUID"] | MS["MS_NODEV"] | MS["MS_NOEXEC"])


def _redirect_stdio(log: str) -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def _remove_root_dir(path: str) -> None:
    """rmdir, never rm -r: the tmpfs lived only in the container's namespace, so the directory
    must be empty on the host; if it is not, something escaped: say so loudly."""
    try:
        os.rmdir(path)
    except OSError as exc:
        raise ContainerError(f"container directory {path!r} could not be removed on the host "
                             f"({exc.strerror}); something was written outside the tmpfs") \
            from exc
