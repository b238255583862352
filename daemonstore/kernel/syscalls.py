"""Kernel layer, system calls: the ctypes table after pyudev's ``_ctypeslib``, its
wrappers, and the one place where an errno becomes ``OSError``.

* :data:`SIGNATURES` names each libc function and its prototype; :data:`FUNCTIONS` is that table
  applied to this process's libc (``use_errno=True``), once, at import.
* :func:`os_error` builds every ``OSError(errno, strerror, path)`` of the kernel backend:
  :func:`last_error` for a ``-1`` return (the errno the call left), :func:`relabel` and
  :class:`RelabelErrors` for an error of an ``os`` call that must name the sandbox path.
* The wrappers (:func:`mount`, :func:`openat2` ...) look the syscall number up and build their
  structs per call. :class:`BoundCalls` is KernelHost's per-call path: the same table's functions,
  bound once per host with their numbers, raising through the same :func:`last_error`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable, Mapping
from ctypes import POINTER, c_char_p, c_int, c_long, c_size_t, c_uint, c_uint64, c_ulong, c_void_p
from types import MappingProxyType
from typing import Any

from daemonstore.kernel.uapi import O_CLOEXEC, PR_SET_NO_NEW_PRIVS, RESOLVE_IN_ROOT, RESOLVE_SAFE


class OpenHow(ctypes.Structure):
    """``struct open_how`` (include/uapi/linux/openat2.h)."""

    _fields_ = [("flags", c_uint64), ("mode", c_uint64), ("resolve", c_uint64)]


class MountAttr(ctypes.Structure):
    """``struct mount_attr`` (include/uapi/linux/mount.h, MOUNT_ATTR_SIZE_VER0)."""

    _fields_ = [("attr_set", c_uint64), ("attr_clr", c_uint64), ("propagation", c_uint64),
                ("userns_fd", c_uint64)]


#: Syscalls glibc has no wrapper for (in every glibc we meet). Numbers of syscalls added since 5.1
#: are unified across architectures (arch/x86/entry/syscalls/syscall_64.tbl and
#: include/uapi/asm-generic/unistd.h agree), so x86_64 and aarch64 share them.
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442,
               "fchmodat2": 452, "statx": 332, "pivot_root": 155},
    # statx (4.11) and pivot_root (2.3.41) predate the unification
    "aarch64": {"open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442,
                "fchmodat2": 452, "statx": 291, "pivot_root": 41},
}

#: name -> (libc symbol, argtypes, restype). syscall(2) is variadic; on x86_64 and aarch64 Linux
#: integer and pointer varargs travel in the same registers as fixed ones, so one exact prototype
#: per system call is safe (the first argument is the syscall number).
SIGNATURES: dict[str, tuple[str, list[Any], Any]] = {
    "mount": ("mount", [c_char_p, c_char_p, c_char_p, c_ulong, c_char_p], c_int),
    "umount2": ("umount2", [c_char_p, c_int], c_int),
    # glibc has no pivot_root wrapper; the system world's container needs it (kernel/container.py)
    "pivot_root": ("syscall", [c_long, c_char_p, c_char_p], c_long),
    "unshare": ("unshare", [c_int], c_int),
    "setns": ("setns", [c_int, c_int], c_int),
    "openat2": ("syscall", [c_long, c_int, c_char_p, POINTER(OpenHow), c_size_t], c_long),
    "open_tree": ("syscall", [c_long, c_int, c_char_p, c_uint], c_long),
    "move_mount": ("syscall", [c_long, c_int, c_char_p, c_int, c_char_p, c_uint], c_long),
    "mount_setattr": ("syscall", [c_long, c_int, c_char_p, c_uint, POINTER(MountAttr), c_size_t],
                      c_long),
    "prctl": ("prctl", [c_int, c_ulong, c_ulong, c_ulong, c_ulong], c_int),
    # statx(AT_EMPTY_PATH) gives Stat and the mount id in one call; fchownat / fchmodat2 (6.6+)
    # with AT_EMPTY_PATH act on an O_PATH fd without a walk through /proc/self/fd/N
    "statx": ("syscall", [c_long, c_int, c_char_p, c_int, c_uint, c_void_p], c_long),
    "fchownat": ("fchownat", [c_int, c_char_p, c_uint, c_uint, c_int], c_int),
    "fchmodat2": ("syscall", [c_long, c_int, c_char_p, c_uint, c_uint], c_long),
    # ioctl(2) is variadic too; every request used here takes an int or a pointer, which
    # c_void_p carries in the same register (the loop ioctls, kernel/loop.py)
    "ioctl": ("ioctl", [c_int, c_ulong, c_void_p], c_int),
    # no os.syncfs: flush one filesystem before a lazy detach (kernel/holds.py)
    "syncfs": ("syncfs", [c_int], c_int),
}


def load_functions() -> Mapping[str, Callable[..., int]]:
    """This process's libc with ``use_errno=True``, every SIGNATURES entry prototyped."""
    libc = ctypes.CDLL(None, use_errno=True)
    funcs: dict[str, Callable[..., int]] = {}
    for name, (symbol, argtypes, restype) in SIGNATURES.items():
        # CDLL.__getitem__ makes a fresh function object each time, so the several prototypes
        # of syscall() do not overwrite each other's argtypes
        func = libc[symbol]
        func.argtypes = argtypes
        func.restype = restype
        funcs[name] = func
    return MappingProxyType(funcs)


#: SIGNATURES applied once, at import, and never changed: CDLL(None) is dlopen(NULL), the running
#: program itself, so loading opens no file
FUNCTIONS = load_functions()

# ---- errno -> OSError -------------------------------------------------------------------------


def os_error(code: int, path: str | None) -> OSError:
    """``OSError(code, strerror, path)`` (the subclass for ``code``, e.g. FileNotFoundError): the
    one place the kernel backend turns an errno into an exception. ``path`` is the sandbox path
    (host.py), never ``/proc/self/fd/N`` or the host path."""
    return OSError(code, os.strerror(code), path)


def last_error(path: str | None) -> OSError:
    """The error a table function that returned ``-1`` left in errno."""
    return os_error(ctypes.get_errno(), path)


def relabel(exc: OSError, path: str) -> OSError:
    """``exc`` naming ``path`` instead of whatever the ``os`` call saw."""
    if exc.errno is None:
        return exc
    return os_error(exc.errno, path)


class RelabelErrors:
    """``with RelabelErrors(path):`` an OSError raised in the block names ``path``
    (:func:`relabel`). A class rather than ``@contextmanager``: KernelHost enters one per call,
    and a generator-based context manager costs more than the system calls it wraps."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: object, exc: BaseException | None, tb: object) -> None:
        # an error that already names the sandbox path passes as it is: it may explain more
        # than strerror (a refused hard link or device node, SECURITY.md, "Ownership rule")
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename != self.path:
            raise relabel(exc, self.path) from None


def _call(name: str, *args: Any, filename: str | None = None) -> int:
    """Call one SIGNATURES function, its syscall number looked up for this machine."""
    if SIGNATURES[name][0] == "syscall":
        args = (_syscall_number(name), *args)
    result = FUNCTIONS[name](*args)
    if result == -1:
        raise last_error(filename)
    return result


def _syscall_number(name: str) -> int:
    machine = platform.machine()
    try:
        return SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number known for {machine}") from None


# ---- wrappers ---------------------------------------------------------------------------------


def fsencode(path: str | None) -> bytes | None:
    """A path as the kernel takes it (``os.fsencode``); ``None`` stays NULL."""
    return None if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None, *, filename: str | None = None) -> None:
    """mount(2); ``filename`` names the failure (default: ``target``)."""
    _call("mount", fsencode(source), fsencode(target), fsencode(fstype), flags, fsencode(data),
          filename=target if filename is None else filename)


def umount2(target: str, flags: int = 0) -> None:
    _call("umount2", fsencode(target), flags, filename=target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): only the system world's container calls it, in its own namespace."""
    _call("pivot_root", fsencode(new_root), fsencode(put_old), filename=new_root)


def set_no_new_privs() -> None:
    """``prctl(PR_SET_NO_NEW_PRIVS, 1)``: exec can never gain privileges (minijail ``-n``)."""
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def unshare(flags: int) -> None:
    _call("unshare", flags)


def setns(fd: int, nstype: int, *, filename: str | None = None) -> None:
    _call("setns", fd, nstype, filename=filename)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0, *,
            filename: str | None = None) -> int:
    """openat2(2); returns the new fd."""
    how = OpenHow(flags, mode, resolve)
    return _call("openat2", dirfd, fsencode(path), ctypes.byref(how), ctypes.sizeof(how),
                 filename=path if filename is None else filename)


def open_tree(dirfd: int, path: str, flags: int, *, filename: str | None = None) -> int:
    return _call("open_tree", dirfd, fsencode(path), flags,
                 filename=path if filename is None else filename)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int, *,
               filename: str | None = None) -> None:
    _call("move_mount", from_dirfd, fsencode(from_path), to_dirfd, fsencode(to_path), flags,
          filename=to_path if filename is None else filename)


def mount_setattr(dirfd: int, path: str, flags: int, *, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0,
                  filename: str | None = None) -> None:
    """mount_setattr(2). KernelHost never needs it (the Host interface sets flags by remount);
    the hardening suite's host guard makes the tests' whole tree read-only with it
    (``AT_RECURSIVE``), which mount(2) cannot do in one call."""
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _call("mount_setattr", dirfd, fsencode(path), flags, ctypes.byref(attr), ctypes.sizeof(attr),
          filename=path if filename is None else filename)


def statx(dirfd: int, path: str, flags: int, mask: int, buf: Any, *,
          filename: str | None = None) -> None:
    """statx(2) into ``buf`` (a ctypes buffer of ``STATX_SIZE`` bytes)."""
    _call("statx", dirfd, fsencode(path), flags, mask, buf, filename=filename)


def ioctl(fd: int, request: int, arg: Any = None, *, filename: str | None = None) -> int:
    """ioctl(2) through the table; ``arg`` is an int, None or a ``ctypes.byref``."""
    return _call("ioctl", fd, request, arg, filename=filename)


def syncfs(fd: int, *, filename: str | None = None) -> None:
    _call("syncfs", fd, filename=filename)


def read_all(fd: int, size: int = 1 << 16) -> bytes:
    """Everything left to read from ``fd``, in ``size`` reads (the fd stays open)."""
    chunks = []
    while chunk := os.read(fd, size):
        chunks.append(chunk)
    return b"".join(chunks)


# ---- KernelHost's per-call path ---------------------------------------------------------------


class BoundCalls:
    """The SIGNATURES functions KernelHost calls on every operation, with their syscall numbers
    bound once; the ``open_how`` structs it passes (one per flags/mode/resolve); and which newer
    calls this kernel lacks. One per KernelHost, living as long as the host.

    The wrappers above look the number up (platform.machine()) and build a fresh struct each call,
    which costs more than the openat2 itself (``python -m bench.boot`` and ``bench.signin`` measure
    it); callers of these raise :func:`last_error` on ``-1`` just the same. ``have_statx`` and
    ``have_fchmodat2`` start true; the first call that the kernel lacks (ENOSYS, before 4.11 or 6.6)
    or a seccomp filter refuses (EPERM) sets them false, and the host uses the older calls from then
    on."""

    __slots__ = ("fchmodat2", "fchownat", "have_fchmodat2", "have_statx", "hows", "hows_in_root",
                 "hows_safe", "mount", "nr_fchmodat2", "nr_openat2", "nr_statx", "openat2", "statx",
                 "umount2")

    def __init__(self) -> None:
        self.openat2, self.mount = FUNCTIONS["openat2"], FUNCTIONS["mount"]
        self.umount2, self.statx = FUNCTIONS["umount2"], FUNCTIONS["statx"]
        self.fchownat, self.fchmodat2 = FUNCTIONS["fchownat"], FUNCTIONS["fchmodat2"]
        # an unknown architecture gets -1: syscall(-1) fails with ENOSYS, as the wrappers' does
        numbers = SYSCALL_NUMBERS.get(platform.machine(), {})
        self.nr_openat2 = numbers.get("openat2", -1)
        self.nr_statx = numbers.get("statx", -1)
        self.nr_fchmodat2 = numbers.get("fchmodat2", -1)
        self.have_statx = self.have_fchmodat2 = True
        self.hows: dict[tuple[int, int, bool], OpenHow] = {}
        #: the same structs without a mode, by flags alone (one lookup, no key tuple to build),
        #: for ``safe`` false and true
        self.hows_in_root: dict[int, OpenHow] = {}
        self.hows_safe: dict[int, OpenHow] = {}

    def how(self, flags: int, mode: int, safe: bool) -> OpenHow:
        """The ``open_how`` KernelHost passes for open ``flags`` (O_CLOEXEC is added), ``mode``
        and ``safe`` (RESOLVE_IN_ROOT, plus RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS if
        ``safe``), made on first use and kept in :attr:`hows` under ``(flags, mode, safe)``."""
        key = (flags, mode, safe)
        how = self.hows.get(key)
        if how is None:
            how = self.hows[key] = OpenHow(flags | O_CLOEXEC, mode,
                                           RESOLVE_SAFE if safe else RESOLVE_IN_ROOT)
            if not mode:
                (self.hows_safe if safe else self.hows_in_root)[flags] = how
        return how
