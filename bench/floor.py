"""The floor of a KernelHost workload: the system calls KernelHost makes, issued bare (bench
helper for bench/signin.py and bench/startup.py). It calls the ctypes functions and constants
KernelHost calls (:mod:`daemonstore.kernel.syscalls`, :mod:`daemonstore.kernel.uapi`), never
prototypes of its own (bench/ is no product code, so it may call ctypes functions directly).

1. :class:`Recorder` stands in front of a KernelHost and records every Host call of a workload
   (method, arguments, the errno it ended with) while passing it through. It runs outside every
   timed region.
2. :meth:`Floor.compile` turns each recorded call into the exact syscall sequence KernelHost
   issues for it (see :data:`SEQUENCES`, as ``strace`` shows them), with every argument encoded
   beforehand: one small closure per Host call.
3. :func:`run` issues them back to back. What is left is the syscalls plus one Python call and
   one ctypes/os call per syscall, with errno checked: what KernelHost would cost with zero
   overhead of its own. Nothing else is in it: no planning, no Op objects, no path handling.

``python bench/signin.py --check-floor`` verifies under strace that the floor issues the same
system calls as ours (up to memory management), so this table cannot silently drift from
KernelHost (daemonstore/kernel/files.py, mounts.py, namespaces.py).

:func:`shell_commands` gives the naive baseline for the same calls: one process per changing
call (``mkdir -m``, ``chown``, ``chmod``, ``mount --bind``, ``mount -o remount,bind,...``,
``mount --make-*``, ``umount``, ``rmdir``); the read-only calls (lstat, listdir, mountinfo) are
left out, which only makes that baseline faster.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemonstore.kernel.syscalls import FUNCTIONS, SYSCALL_NUMBERS, OpenHow
from daemonstore.kernel.uapi import (
    AT_EMPTY_PATH,
    MNT_DETACH,
    OPEN_HOW_SIZE_VER0,
    RESOLVE_IN_ROOT,
    RESOLVE_SAFE,
    STATX_SIZE,
    STATX_WANTED,
    UMOUNT_NOFOLLOW,
)
from daemonstore.mountflags import MS_FLAGS as MS
from daemonstore.mountflags import option_bits

#: Host method -> the syscalls KernelHost makes for it (fd-based, every path through
#: openat2(root_fd, RESOLVE_IN_ROOT[|NO_SYMLINKS|NO_MAGICLINKS])). Documentation of what the
#: closures below issue; --check-floor compares it with strace.
SEQUENCES = {
    "lstat/stat/exists": "openat2(O_PATH[|O_NOFOLLOW]) statx(fd, AT_EMPTY_PATH) close",
    "mkdir": "openat2(parent) mkdirat openat(name, O_PATH|O_NOFOLLOW|O_DIRECTORY) "
             "fchmodat2(fd, AT_EMPTY_PATH) close close",
    "chown": "openat2(O_PATH) [fstat if safe] fchownat(fd, AT_EMPTY_PATH) close",
    "chmod": "openat2(O_PATH) fstat fchmodat2(fd, AT_EMPTY_PATH) close",
    "bind": "openat2 openat2 mount(/proc/self/fd/S, /proc/self/fd/T, MS_BIND) close close",
    "make/remount_bind": "openat2 mount(NULL, /proc/self/fd/T, flags) close",
    "make_store": "mkdir's, chown's, bind's (path onto itself), then make's (MS_SHARED) "
                  "sequence, back to back (kernel/store.py)",
    "umount": "openat2 readlink(/proc/self/fd/N) close openat2(parent) "
              "umount2(/proc/self/fd/P/name) close",
    "rmdir": "openat2(parent) unlinkat(AT_REMOVEDIR) close",
    "listdir": "openat2(O_RDONLY|O_DIRECTORY) os.listdir(fd) close",
    "mountinfo": "openat(/proc/self/mountinfo) read... close (no parsing: that is planning)",
    "read_file (safe)": "openat2(O_PATH|O_NOFOLLOW) fstat open(/proc/self/fd/N) close read... "
                        "close",
    "write_file (safe)": "openat2(O_CREAT|O_EXCL|O_NOFOLLOW) [EEXIST: openat2(O_PATH) fstat "
                         "open(/proc/self/fd/N) close, else fchmod] write close",
}


#: one recorded Host call: (method, args, kwargs, errno it ended with or 0)
Call = tuple[str, tuple[Any, ...], dict[str, Any], int]


class Recorder:
    """A Host that records each call made through it and passes it to ``host``."""

    def __init__(self, host: Any) -> None:
        self._host = host
        self.kind = host.kind
        self.calls: list[Call] = []

    def take(self) -> list[Call]:
        calls, self.calls = self.calls, []
        return calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._host, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = attr(*args, **kwargs)
            except OSError as exc:
                self.calls.append((name, args, kwargs, exc.errno or 0))
                raise
            self.calls.append((name, args, kwargs, 0))
            return result

        return call


def substitute(calls: list[Call], old: str, new: str) -> list[Call]:
    """The same calls for another user: ``old`` replaced by ``new`` in every string argument."""

    def sub(value: Any) -> Any:
        return value.replace(old, new) if isinstance(value, str) else value

    return [(name, tuple(sub(a) for a in args), {k: sub(v) for k, v in kw.items()}, err)
            for name, args, kw, err in calls]


def per_store(calls: list[Call]) -> list[Call]:
    """``calls`` with each ``make_stores`` and ``lstat_many`` call as the ``make_store`` or
    ``lstat`` calls it stands for (the same system calls, host.py ``make_stores_by_calls`` and
    ``lstat_many_by_calls``; a path that failed is not told apart in the recording, so a replay
    of one diverges and says so)."""
    out: list[Call] = []
    for name, args, kw, err in calls:
        if name == "make_stores":
            out += [("make_store", (path, *args[1:]), kw, err) for path in args[0]]
        elif name == "lstat_many":
            out += [("lstat", (path,), kw, 0) for path in args[0]]
        else:
            out.append((name, args, kw, err))
    return out


def _split(path: str) -> tuple[bytes, bytes]:
    """(parent relative to the root, last component) as KernelHost._parent makes them."""
    head, _, name = path.rstrip("/").rpartition("/")
    if name in ("", ".", ".."):
        head, name = path, "."
    return _rel(head or "/"), os.fsencode(name)


def _canonical(path: str) -> bool:
    """True if KernelHost._canonical gives the path back as it is (no ``.``, ``..``, ``//``;
    no symlinks: the floor issues its readlink but does not need the answer)."""
    return path == "/" or all(part not in ("", ".", "..") for part in path.split("/")[1:])


def _rel(path: str) -> bytes:
    return os.fsencode(path.lstrip("/") or ".")


# One builder per family of Host calls: it binds what its closures call to local names (closure
# cells: the cheapest lookup), and each closure issues what KernelHost issues for one Host call,
# returning 0 or the errno it stopped at. open2(rel, how) is KernelHost._open's openat2.
Open2 = Callable[[bytes, OpenHow], int]
_MKDIR_REOPEN = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY


# stat/lstat/exists, chown, chmod: fd-based, as KernelHost._stat_fd and _chmod_fd
def _inode_replays(open2: Open2) -> dict[str, Callable[..., int]]:
    nr = SYSCALL_NUMBERS[platform.machine()]
    statx, nr_statx, chmod2, nr_chmod2 = (FUNCTIONS["statx"], nr["statx"], FUNCTIONS["fchmodat2"],
                                          nr["fchmodat2"])
    chownat, get_errno, close = FUNCTIONS["fchownat"], ctypes.get_errno, os.close
    buf = ctypes.create_string_buffer(STATX_SIZE)
    sbuf = ctypes.addressof(buf)

    def stat(rel: bytes, h: OpenHow, _keep: Any = buf) -> int:
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        err = get_errno() if statx(nr_statx, fd, b"", AT_EMPTY_PATH, STATX_WANTED, sbuf) else 0
        close(fd)
        return err

    def chown(rel: bytes, uid: int, gid: int, fstat: bool, h: OpenHow) -> int:
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        if fstat:
            os.fstat(fd)
        err = get_errno() if chownat(fd, b"", uid, gid, AT_EMPTY_PATH) else 0
        close(fd)
        return err

    def chmod(rel: bytes, mode: int, h: OpenHow) -> int:
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        os.fstat(fd)
        err = get_errno() if chmod2(nr_chmod2, fd, b"", mode, AT_EMPTY_PATH) else 0
        close(fd)
        return err

    return {"stat": stat, "chown": chown, "chmod": chmod}


# mkdir (then the exact mode on what it made: mkdir applies the umask), rmdir, listdir
def _dir_replays(open2: Open2) -> dict[str, Callable[..., int]]:
    chmod2, nr_chmod2 = FUNCTIONS["fchmodat2"], SYSCALL_NUMBERS[platform.machine()]["fchmodat2"]
    get_errno, close = ctypes.get_errno, os.close

    def mkdir(head: bytes, name: bytes, mode: int, h: OpenHow) -> int:
        dfd = open2(head, h)
        if dfd < 0:
            return get_errno()
        try:
            os.mkdir(name, mode, dir_fd=dfd)
            fd = os.open(name, _MKDIR_REOPEN, dir_fd=dfd)
        except OSError as exc:
            close(dfd)
            return exc.errno or 0
        err = get_errno() if chmod2(nr_chmod2, fd, b"", mode, AT_EMPTY_PATH) else 0
        close(fd)
        close(dfd)
        return err

    def rmdir(head: bytes, name: bytes, h: OpenHow) -> int:
        dfd = open2(head, h)
        if dfd < 0:
            return get_errno()
        try:
            os.rmdir(name, dir_fd=dfd)
        except OSError as exc:
            return exc.errno or 0
        finally:
            close(dfd)
        return 0

    def unlink(head: bytes, name: bytes, h: OpenHow) -> int:
        dfd = open2(head, h)
        if dfd < 0:
            return get_errno()
        try:
            os.unlink(name, dir_fd=dfd)
        except OSError as exc:
            return exc.errno or 0
        finally:
            close(dfd)
        return 0

    def listdir(rel: bytes, h: OpenHow) -> int:
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        os.listdir(fd)
        close(fd)
        return 0

    return {"mkdir": mkdir, "rmdir": rmdir, "unlink": unlink, "listdir": listdir}


# bind, make/remount_bind, umount: mount(2) on /proc/self/fd/N of what openat2 found; umount2
# of the last component through its parent's fd
def _mount_replays(open2: Open2) -> dict[str, Callable[..., int]]:
    mount, umount2, get_errno, close = (FUNCTIONS["mount"], FUNCTIONS["umount2"],
                                        ctypes.get_errno, os.close)

    def bind(src: bytes, dst: bytes, flags: int, h: OpenHow) -> int:
        sfd = open2(src, h)
        if sfd < 0:
            return get_errno()
        tfd = open2(dst, h)
        if tfd < 0:
            err = get_errno()
        else:
            err = get_errno() if mount(b"/proc/self/fd/%d" % sfd, b"/proc/self/fd/%d" % tfd,
                                       None, flags, None) else 0
            close(tfd)
        close(sfd)
        return err

    def remount(rel: bytes, flags: int, h: OpenHow) -> int:
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        err = get_errno() if mount(None, b"/proc/self/fd/%d" % fd, None, flags, None) else 0
        close(fd)
        return err

    def umount(rel: bytes, head: bytes, name: bytes, flags: int, h: OpenHow, hd: OpenHow) -> int:
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        os.readlink(b"/proc/self/fd/%d" % fd)  # KernelHost._canonical
        close(fd)
        dfd = open2(head, hd)
        if dfd < 0:
            return get_errno()
        err = get_errno() if umount2(b"/proc/self/fd/%d/%s" % (dfd, name), flags) else 0
        close(dfd)
        return err

    return {"bind": bind, "remount": remount, "umount": umount}


# make_store: startup's mkdir, chown, bind and make of one store, as KernelHost's fused call
# issues them (kernel/store.py), in one closure as it is one Host call
def _store_replays(open2: Open2) -> dict[str, Callable[..., int]]:
    chmod2, nr_chmod2 = FUNCTIONS["fchmodat2"], SYSCALL_NUMBERS[platform.machine()]["fchmodat2"]
    chownat, mount, get_errno, close = (FUNCTIONS["fchownat"], FUNCTIONS["mount"],
                                        ctypes.get_errno, os.close)
    ms_bind, ms_shared = MS["MS_BIND"], MS["MS_SHARED"]

    def make_store(head: bytes, name: bytes, rel: bytes, mode: int, uid: int, gid: int,
                   fstat: bool, hd: OpenHow, h: OpenHow) -> int:
        dfd = open2(head, hd)
        if dfd < 0:
            return get_errno()
        try:
            os.mkdir(name, mode, dir_fd=dfd)
            fd = os.open(name, _MKDIR_REOPEN, dir_fd=dfd)
        except OSError as exc:
            close(dfd)
            return exc.errno or 0
        err = get_errno() if chmod2(nr_chmod2, fd, b"", mode, AT_EMPTY_PATH) else 0
        close(fd)
        close(dfd)
        if err:
            return err
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        if fstat:
            os.fstat(fd)
        err = get_errno() if chownat(fd, b"", uid, gid, AT_EMPTY_PATH) else 0
        close(fd)
        if err:
            return err
        sfd = open2(rel, h)
        if sfd < 0:
            return get_errno()
        fd = open2(rel, h)
        if fd < 0:
            err = get_errno()
        else:
            err = get_errno() if mount(b"/proc/self/fd/%d" % sfd, b"/proc/self/fd/%d" % fd,
                                       None, ms_bind, None) else 0
            close(fd)
        close(sfd)
        if err:
            return err
        fd = open2(rel, h)
        if fd < 0:
            return get_errno()
        err = get_errno() if mount(None, b"/proc/self/fd/%d" % fd, None, ms_shared, None) else 0
        close(fd)
        return err

    return {"make_store": make_store}


# read_file, write_file: plain reads and writes of what openat2 found
def _io_replays(open2: Open2) -> dict[str, Callable[..., int]]:
    get_errno, close = ctypes.get_errno, os.close

    def read_file(rel: bytes, h_path: OpenHow, reopen: int, h_plain: OpenHow | None) -> int:
        if h_plain is not None:  # not safe: openat2(O_RDONLY|O_NONBLOCK)
            fd = open2(rel, h_plain)
            if fd < 0:
                return get_errno()
        else:  # safe: KernelHost._open_no_device
            pfd = open2(rel, h_path)
            if pfd < 0:
                return get_errno()
            os.fstat(pfd)
            fd = os.open(b"/proc/self/fd/%d" % pfd, reopen)
            close(pfd)
        while os.read(fd, 1 << 16):
            pass
        close(fd)
        return 0

    def write_file(rel: bytes, data: bytes, mode: int, h_excl: OpenHow, h_path: OpenHow,
                   reopen: int) -> int:
        fd = open2(rel, h_excl)
        if fd < 0:  # EEXIST: KernelHost._open_no_device (and no fchmod: not made here)
            if get_errno() != errno.EEXIST or (pfd := open2(rel, h_path)) < 0:
                return get_errno()
            os.fstat(pfd)
            fd = os.open(b"/proc/self/fd/%d" % pfd, reopen)
            close(pfd)
        else:
            os.fchmod(fd, mode)
        os.write(fd, data)
        close(fd)
        return 0

    return {"read_file": read_file, "write_file": write_file}


def mountinfo() -> int:
    """The replay of Host.mountinfo: read the table (parsing it is planning, not the floor)."""
    fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
    while os.read(fd, 1 << 17):
        pass
    os.close(fd)
    return 0


class Floor:
    """Bare-syscall replays of Host calls below the sandbox root ``root_fd`` (an O_PATH fd of
    the sandbox root, in the namespace the calls run in)."""

    def __init__(self, root_fd: int) -> None:
        openat2, nr_openat2 = FUNCTIONS["openat2"], SYSCALL_NUMBERS[platform.machine()]["openat2"]

        def open2(rel: bytes, how: OpenHow) -> int:
            return openat2(nr_openat2, root_fd, rel, how, OPEN_HOW_SIZE_VER0)

        self._fns: dict[str, Callable[..., int]] = {
            **_inode_replays(open2), **_dir_replays(open2), **_mount_replays(open2),
            **_io_replays(open2), **_store_replays(open2), "mountinfo": mountinfo}
        self._hows: dict[tuple[int, int, int], OpenHow] = {}

    def _how(self, flags: int, safe: bool, mode: int = 0) -> OpenHow:
        """The ``struct open_how`` KernelHost._open passes for these arguments, made once."""
        key = (flags | os.O_CLOEXEC, mode, RESOLVE_SAFE if safe else RESOLVE_IN_ROOT)
        return self._hows.setdefault(key, OpenHow(*key))

    def compile(self, calls: list[Call]) -> list[tuple[Callable[..., int], tuple[Any, ...], int]]:
        """(closure, arguments, expected errno) per recorded call; NotImplementedError for a
        call the floor has no sequence for (add it, with --check-floor to prove it)."""
        return [self._one(name, args, kw, err) for name, args, kw, err in per_store(calls)]

    def _one(self, name: str, args: tuple[Any, ...], kw: dict[str, Any],
             err: int) -> tuple[Callable[..., int], tuple[Any, ...], int]:
        compiled = self._read(name, args, kw) or self._change(name, args, kw, err)
        if compiled is None:
            raise NotImplementedError(f"no floor sequence for Host.{name}{args} {kw}")
        fn, fn_args = compiled
        return fn, fn_args, 0 if name == "current_namespace" else err

    def _read(self, name: str, args: tuple[Any, ...],
              kw: dict[str, Any]) -> tuple[Callable[..., int], tuple[Any, ...]] | None:
        """The replay of a call that changes nothing, or None."""
        f, how = self._fns, self._how
        safe = kw.get("safe", False)
        if name in ("stat", "lstat", "exists"):
            nofollow = 0 if name == "stat" else os.O_NOFOLLOW
            return f["stat"], (_rel(args[0]), how(os.O_PATH | nofollow, safe))
        if name == "listdir":
            return f["listdir"], (_rel(args[0]), how(os.O_RDONLY | os.O_DIRECTORY, safe))
        if name == "mountinfo" and not args and not kw:
            return f["mountinfo"], ()
        if name == "read_file":
            flags = os.O_RDONLY | os.O_NONBLOCK
            return f["read_file"], (_rel(args[0]), how(os.O_PATH | os.O_NOFOLLOW, True),
                                    flags | os.O_CLOEXEC, None if safe else how(flags, False))
        if name == "current_namespace":
            return (lambda: 0), ()
        return None

    def _change(self, name: str, args: tuple[Any, ...], kw: dict[str, Any],
                err: int) -> tuple[Callable[..., int], tuple[Any, ...]] | None:
        """The replay of a call that changes the tree, or None."""
        f, how = self._fns, self._how
        safe, rec = kw.get("safe", False), MS["MS_REC"] if kw.get("recursive") else 0
        if name == "mkdir" and not kw.get("parents"):
            mode = args[1] if len(args) > 1 else kw.get("mode", 0o755)
            return f["mkdir"], (*_split(args[0]), mode, how(os.O_PATH | os.O_DIRECTORY, safe))
        if name in ("chown", "chmod") and kw.get("follow_symlinks", True):
            owner = (args[1], args[2], safe) if name == "chown" else (args[1],)
            return f[name], (_rel(args[0]), *owner, how(os.O_PATH, safe))
        if name == "make_store" and _split(args[0])[1] not in (b".", b".."):
            mode, uid, gid = args[1:4]
            return f["make_store"], (*_split(args[0]), _rel(args[0]), mode, uid, gid, safe,
                                     how(os.O_PATH | os.O_DIRECTORY, safe), how(os.O_PATH, safe))
        if name == "bind":
            flags = MS["MS_BIND"] | rec
            return f["bind"], (_rel(args[0]), _rel(args[1]), flags, how(os.O_PATH, safe))
        if name in ("make", "remount_bind"):
            flags = (MS[f"MS_{str(args[1]).upper()}"] | rec if name == "make" else
                     MS["MS_REMOUNT"] | MS["MS_BIND"] | option_bits(frozenset(args[1])))
            return f["remount"], (_rel(args[0]), flags, how(os.O_PATH, safe))
        if name == "umount" and _canonical(args[0]):
            flags = UMOUNT_NOFOLLOW | (MNT_DETACH if kw.get("detach") else 0)
            return f["umount"], (_rel(args[0]), *_split(args[0]), flags, how(os.O_PATH, safe),
                                 how(os.O_PATH | os.O_DIRECTORY, safe))
        if name in ("rmdir", "unlink"):  # unlink: a mount-point guard's marker (ops/guard.py)
            return f[name], (*_split(args[0]), how(os.O_PATH | os.O_DIRECTORY, safe))
        if name == "write_file" and safe and not kw.get("append") and not err:
            mode, base = kw.get("mode", 0o644), os.O_WRONLY | os.O_NONBLOCK | os.O_TRUNC
            excl = how(base | os.O_NOFOLLOW | os.O_CREAT | os.O_EXCL, safe, mode)
            return f["write_file"], (_rel(args[0]), args[1], mode, excl,
                                     how(os.O_PATH | os.O_NOFOLLOW, True), base | os.O_CLOEXEC)
        return None


#: closures that change nothing (a warm-up may run them once before the timed region)
READ_ONLY = frozenset({"stat", "listdir", "mountinfo", "read_file"})


def run(ops: list[tuple[Callable[..., int], tuple[Any, ...], int]]) -> None:
    """Issue a compiled workload; each call must end as it did when recorded."""
    for fn, args, want in ops:
        if fn(*args) != want:
            got = fn.__name__
            raise OSError(errno.EPROTO, f"floor replay of {got}{args} diverged from the "
                          f"recording (wanted errno {want})")


def shell_commands(calls: list[Call], root: str) -> list[tuple[list[str], bytes | None]]:
    """The naive baseline: (argv, stdin) per changing call, paths on the host (``root`` +
    sandbox path), run one process each."""
    out: list[tuple[list[str], bytes | None]] = []
    for name, args, kw, err in per_store(calls):
        if err:  # failed when recorded (sign-out's first rmdir of a guarded mount point,
            continue  # ENOTEMPTY: ops/guard.py): a script would not issue it
        p = root + args[0] if args and isinstance(args[0], str) else ""
        if name == "mkdir":
            out.append((["mkdir", "-m", f"{args[1] if len(args) > 1 else 0o755:o}", p], None))
        elif name == "make_store":
            out += [(["mkdir", "-m", f"{args[1]:o}", p], None),
                    (["chown", f"{args[2]}:{args[3]}", p], None),
                    (["mount", "--bind", p, p], None), (["mount", "--make-shared", p], None)]
        elif name == "chown":
            out.append((["chown", f"{args[1]}:{args[2]}", p], None))
        elif name == "chmod":
            out.append((["chmod", f"{args[1]:o}", p], None))
        elif name == "bind":
            flag = "--rbind" if kw.get("recursive") else "--bind"
            out.append((["mount", flag, p, root + args[1]], None))
        elif name == "remount_bind":
            out.append((["mount", "-o", ",".join(["remount", "bind", *sorted(args[1])]), p],
                        None))
        elif name == "make":
            rec = "r" if kw.get("recursive") else ""
            out.append((["mount", f"--make-{rec}{args[1]}", p], None))
        elif name == "umount":
            out.append((["umount", *(["-l"] if kw.get("detach") else []), p], None))
        elif name == "rmdir":
            out.append((["rmdir", p], None))
        elif name == "unlink":
            out.append((["rm", "--", p], None))
        elif name == "write_file":
            out.append((["sh", "-c", 'umask 077 && cat > "$1"', "sh", p], args[1]))
    return out


# ---- proof: the same syscalls as ours, under strace ------------------------------------------

MARK = "/@@bench-floor-mark:"
#: memory management, which an allocator does whenever it likes, and the benchmark's own clock
#: reads (time.thread_time is a real clock_gettime syscall; the harness reads it around
#: different phases of each variant)
NOISE = frozenset({"brk", "mmap", "munmap", "mremap", "madvise", "mprotect", "clock_gettime"})
_marking = [False]


def start_marking() -> None:
    """From now on :func:`mark` is visible to strace (only --check-floor's traced runs mark)."""
    _marking[0] = True


def mark(label: str) -> None:
    """Start phase ``label`` (``VARIANT:PHASE``; a label ending in ``:end`` ends it)."""
    if _marking[0]:
        os.access(MARK + label, os.F_OK)


def strace_counts(argv: list[str]) -> dict[str, Counter[str]]:
    """Run ``argv`` under ``strace -f``; syscall counts per marked phase (noise left out)."""
    with tempfile.NamedTemporaryFile(prefix="floor-strace-", suffix=".txt") as log:
        subprocess.run(["strace", "-f", "-qq", "-o", log.name, *argv], check=True)
        lines = Path(log.name).read_text(errors="replace").splitlines()
    call = re.compile(r"^(\d+)\s+([a-z0-9_]+)\(")
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    phase: dict[str, str | None] = {}
    for line in lines:
        m = call.match(line)
        if not m:
            continue
        pid, name = m.groups()
        if MARK in line:
            label = line.split(MARK, 1)[1].split('"', 1)[0]
            phase[pid] = None if label.endswith(":end") else label
        elif (current := phase.get(pid)) and name not in NOISE:
            counts[current][name] += 1
    return counts


def compare(counts: dict[str, Counter[str]], phases: list[str]) -> bool:
    """Print ours against the floor per phase; True if every phase makes the same syscalls."""
    same = True
    for p in phases:
        ours, bare = counts[f"ours:{p}"], counts[f"floor:{p}"]
        diff = {k: (ours[k], bare[k]) for k in sorted(set(ours) | set(bare)) if ours[k] != bare[k]}
        print(f"{p:9s} ours {sum(ours.values()):4d} syscalls, floor {sum(bare.values()):4d}: "
              + ("same syscalls" if not diff else f"DIFFER (ours, floor): {diff}"))
        print(f"          {dict(sorted(ours.items()))}")
        same = same and not diff and bool(ours)
    print("floor check: " + ("ours and the floor make the same syscalls" if same else "FAILED"))
    return same
