"""The floor of a KernelHost workload: the system calls KernelHost makes, issued bare (bench
helper for bench/signin.py and bench/startup.py; imports ctypes like bench/startup.py did).

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
daemonstore/kernel/__init__.py.

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

from daemonstore import mountflags

O_PATH, O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC = os.O_PATH, os.O_DIRECTORY, os.O_NOFOLLOW, os.O_CLOEXEC
RESOLVE_IN_ROOT, RESOLVE_SAFE = 0x10, 0x10 | 0x04 | 0x02  # IN_ROOT | NO_SYMLINKS | NO_MAGICLINKS
AT_EMPTY_PATH, AT_REMOVEDIR = 0x1000, 0x200
STATX_MASK = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x100 | 0x200 | 0x1000  # Stat's fields + mnt_id
MS_BIND, MS_REC, MS_REMOUNT = 4096, 16384, 32
UMOUNT_NOFOLLOW, MNT_DETACH = 8, 2
_NR = {"x86_64": {"openat2": 437, "statx": 332, "fchmodat2": 452},
       "aarch64": {"openat2": 437, "statx": 291, "fchmodat2": 452}}

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


class Floor:
    """Bare-syscall replays of Host calls below the sandbox root ``root_fd`` (an O_PATH fd of
    the sandbox root, in the namespace the calls run in)."""

    def __init__(self, root_fd: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)

        def fn(symbol: str, argtypes: list[Any], restype: Any = ctypes.c_int) -> Any:
            f = libc[symbol]
            f.argtypes, f.restype = argtypes, restype
            return f

        c = ctypes
        nr = _NR[platform.machine()]
        sys_ = fn("syscall", [c.c_long, c.c_int, c.c_char_p, c.c_void_p, c.c_size_t], c.c_long)
        statx = fn("syscall", [c.c_long, c.c_int, c.c_char_p, c.c_int, c.c_uint, c.c_void_p],
                   c.c_long)
        chmod2 = fn("syscall", [c.c_long, c.c_int, c.c_char_p, c.c_uint, c.c_uint], c.c_long)
        chownat = fn("fchownat", [c.c_int, c.c_char_p, c.c_uint, c.c_uint, c.c_int])
        mount = fn("mount", [c.c_char_p] * 3 + [c.c_ulong, c.c_char_p])
        umount2 = fn("umount2", [c.c_char_p, c.c_int])
        get_errno, close, buf = ctypes.get_errno, os.close, ctypes.create_string_buffer(256)
        nr_openat2, nr_statx, nr_chmod2 = nr["openat2"], nr["statx"], nr["fchmodat2"]
        sbuf, hows = ctypes.addressof(buf), {}

        def how(flags: int, safe: bool, mode: int = 0) -> int:
            key = (flags | O_CLOEXEC, mode, RESOLVE_SAFE if safe else RESOLVE_IN_ROOT)
            if key not in hows:  # struct open_how {flags, mode, resolve}
                hows[key] = (ctypes.c_uint64 * 3)(*key)
            return ctypes.addressof(hows[key])

        # each closure returns 0 or the errno it stopped at, issuing what KernelHost issues;
        # they pass raw addresses, so open2 (which they all use) keeps the structs alive
        def open2(rel: bytes, h: int, _keep: Any = (buf, hows)) -> int:
            return sys_(nr_openat2, root_fd, rel, h, 24)

        def stat(rel: bytes, h: int) -> int:
            fd = open2(rel, h)
            if fd < 0:
                return get_errno()
            err = get_errno() if statx(nr_statx, fd, b"", AT_EMPTY_PATH, STATX_MASK, sbuf) else 0
            close(fd)
            return err

        def mkdir(head: bytes, name: bytes, mode: int, h: int) -> int:
            dfd = open2(head, h)
            if dfd < 0:
                return get_errno()
            try:
                os.mkdir(name, mode, dir_fd=dfd)
                fd = os.open(name, O_PATH | O_NOFOLLOW | O_CLOEXEC | O_DIRECTORY, dir_fd=dfd)
            except OSError as exc:
                close(dfd)
                return exc.errno or 0
            err = get_errno() if chmod2(nr_chmod2, fd, b"", mode, AT_EMPTY_PATH) else 0
            close(fd)
            close(dfd)
            return err

        def chown(rel: bytes, uid: int, gid: int, fstat: bool, h: int) -> int:
            fd = open2(rel, h)
            if fd < 0:
                return get_errno()
            if fstat:
                os.fstat(fd)
            err = get_errno() if chownat(fd, b"", uid, gid, AT_EMPTY_PATH) else 0
            close(fd)
            return err

        def chmod(rel: bytes, mode: int, h: int) -> int:
            fd = open2(rel, h)
            if fd < 0:
                return get_errno()
            os.fstat(fd)
            err = get_errno() if chmod2(nr_chmod2, fd, b"", mode, AT_EMPTY_PATH) else 0
            close(fd)
            return err

        def bind(src: bytes, dst: bytes, flags: int, h: int) -> int:
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

        def remount(rel: bytes, flags: int, h: int) -> int:
            fd = open2(rel, h)
            if fd < 0:
                return get_errno()
            err = get_errno() if mount(None, b"/proc/self/fd/%d" % fd, None, flags, None) else 0
            close(fd)
            return err

        def umount(rel: bytes, head: bytes, name: bytes, flags: int, h: int, hdir: int) -> int:
            fd = open2(rel, h)
            if fd < 0:
                return get_errno()
            os.readlink(b"/proc/self/fd/%d" % fd)  # KernelHost._canonical
            close(fd)
            dfd = open2(head, hdir)
            if dfd < 0:
                return get_errno()
            err = get_errno() if umount2(b"/proc/self/fd/%d/%s" % (dfd, name), flags) else 0
            close(dfd)
            return err

        def rmdir(head: bytes, name: bytes, h: int) -> int:
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

        def listdir(rel: bytes, h: int) -> int:
            fd = open2(rel, h)
            if fd < 0:
                return get_errno()
            os.listdir(fd)
            close(fd)
            return 0

        def mountinfo() -> int:
            fd = os.open("/proc/self/mountinfo", os.O_RDONLY | O_CLOEXEC)
            while os.read(fd, 1 << 17):
                pass
            close(fd)
            return 0

        def read_file(rel: bytes, h_path: int, reopen: int, h_plain: int) -> int:
            if h_plain:  # not safe: openat2(O_RDONLY|O_NONBLOCK)
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

        def write_file(rel: bytes, data: bytes, mode: int, h_excl: int, h_path: int,
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

        self._fns: dict[str, Callable[..., int]] = {
            "stat": stat, "mkdir": mkdir, "chown": chown, "chmod": chmod, "bind": bind,
            "remount": remount, "umount": umount, "rmdir": rmdir, "listdir": listdir,
            "mountinfo": mountinfo, "read_file": read_file, "write_file": write_file}
        self._how = how

    def compile(self, calls: list[Call]) -> list[tuple[Callable[..., int], tuple[Any, ...], int]]:
        """(closure, arguments, expected errno) per recorded call; NotImplementedError for a
        call the floor has no sequence for (add it, with --check-floor to prove it)."""
        return [self._one(name, args, kw, err) for name, args, kw, err in calls]

    def _one(self, name: str, args: tuple[Any, ...], kw: dict[str, Any],
             err: int) -> tuple[Callable[..., int], tuple[Any, ...], int]:
        f, how = self._fns, self._how
        safe = kw.get("safe", False)
        if name in ("lstat", "exists"):
            return f["stat"], (_rel(args[0]), how(O_PATH | O_NOFOLLOW, safe)), err
        if name == "stat":
            return f["stat"], (_rel(args[0]), how(O_PATH, safe)), err
        if name == "mkdir" and not kw.get("parents"):
            mode = args[1] if len(args) > 1 else kw.get("mode", 0o755)
            head, base = _split(args[0])
            return f["mkdir"], (head, base, mode, how(O_PATH | O_DIRECTORY, safe)), err
        if name == "chown" and kw.get("follow_symlinks", True):
            return f["chown"], (_rel(args[0]), args[1], args[2], safe, how(O_PATH, safe)), err
        if name == "chmod" and kw.get("follow_symlinks", True):
            return f["chmod"], (_rel(args[0]), args[1], how(O_PATH, safe)), err
        if name == "bind":
            flags = MS_BIND | (MS_REC if kw.get("recursive") else 0)
            return f["bind"], (_rel(args[0]), _rel(args[1]), flags, how(O_PATH, safe)), err
        if name == "make":
            flags = mountflags.MS_FLAGS[f"MS_{str(args[1]).upper()}"]
            flags |= MS_REC if kw.get("recursive") else 0
            return f["remount"], (_rel(args[0]), flags, how(O_PATH, safe)), err
        if name == "remount_bind":
            flags = MS_REMOUNT | MS_BIND | mountflags.option_bits(frozenset(args[1]))
            return f["remount"], (_rel(args[0]), flags, how(O_PATH, safe)), err
        if name == "umount" and _canonical(args[0]):
            head, base = _split(args[0])
            flags = UMOUNT_NOFOLLOW | (MNT_DETACH if kw.get("detach") else 0)
            return f["umount"], (_rel(args[0]), head, base, flags, how(O_PATH, safe),
                                 how(O_PATH | O_DIRECTORY, safe)), err
        if name == "rmdir":
            head, base = _split(args[0])
            return f["rmdir"], (head, base, how(O_PATH | O_DIRECTORY, safe)), err
        if name == "listdir":
            return f["listdir"], (_rel(args[0]), how(os.O_RDONLY | O_DIRECTORY, safe)), err
        if name == "mountinfo" and not args and not kw:
            return f["mountinfo"], (), err
        if name == "read_file":
            flags = os.O_RDONLY | os.O_NONBLOCK
            return f["read_file"], (_rel(args[0]), how(O_PATH | O_NOFOLLOW, True),
                                    flags | O_CLOEXEC, 0 if safe else how(flags, False)), err
        if name == "write_file" and safe and not kw.get("append") and not err:
            mode = kw.get("mode", 0o644)
            base = os.O_WRONLY | os.O_NONBLOCK | os.O_TRUNC
            excl = how(base | O_NOFOLLOW | os.O_CREAT | os.O_EXCL, safe, mode)
            return f["write_file"], (_rel(args[0]), args[1], mode, excl,
                                     how(O_PATH | O_NOFOLLOW, True), base | O_CLOEXEC), err
        if name == "current_namespace":
            return (lambda: 0), (), 0
        raise NotImplementedError(f"no floor sequence for Host.{name}{args} {kw}")


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
    for name, args, kw, _err in calls:
        p = root + args[0] if args and isinstance(args[0], str) else ""
        if name == "mkdir":
            out.append((["mkdir", "-m", f"{args[1] if len(args) > 1 else 0o755:o}", p], None))
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
