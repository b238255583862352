"""Kernel backend: :class:`KernelHost`, the real-kernel :class:`~daemonstore.host.Host` (the only
module importing ctypes, style.md §4).

Three parts:

* a ctypes table after pyudev's ``_ctypeslib`` (style.md §2.4): :data:`SIGNATURES`, one loader
  with ``use_errno=True``, and one function (:func:`_call`) where a ``-1`` return becomes
  ``OSError(errno, strerror, filename)``; KernelHost's per-call hot path (:class:`_Hot`) calls
  the same table's functions directly, bound once, and raises the same OSError
  (bench/startup.py and bench/signin.py measure it against the bare syscalls);
* the ``MS_*`` constants and their names (:func:`mount_flags_to_string`,
  :func:`parse_mount_flags`), re-exported from the pure :mod:`daemonstore.mountflags` table;
* :class:`KernelHost`: every path is resolved with ``openat2(RESOLVE_IN_ROOT)`` below the sandbox
  root, so a symlink planted in the sandbox can never lead to the host's files, and the mount
  calls act on ``/proc/self/fd/N`` of exactly the dentry that resolution found (umount is the
  exception: see :meth:`KernelHost.umount`).

Running it safely (a forked child, a private namespace, a tmpfs sandbox) is
:mod:`daemonstore.kernel.sandbox`; ``run_in_sandbox`` and friends are re-exported from here.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import itertools
import os
import platform
import stat as stat_mod
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from daemonstore import mountflags
from daemonstore.host import Propagation, Stat

# the safety guards and the forked-child runner live in sandbox.py (no ctypes there); it imports
# this module only inside its functions, so re-exporting from it here is not circular
from daemonstore.kernel.sandbox import (
    SandboxRefused,
    check_private_namespace,
    check_tmpfs_mount_point,
    kernel_available,
    kernel_unavailable_reason,
    require_root,
    run_in_sandbox,
)
from daemonstore.mountinfo import rebase

# ---- constants (include/uapi/linux/mount.h, sched.h, openat2.h, fcntl.h) -----------------------

# MS_* come from the one pure table (daemonstore.mountflags) the jail and the audit use too
MS_FLAG_NAMES = mountflags.MS_FLAGS
MS_RDONLY = MS_FLAG_NAMES["MS_RDONLY"]
MS_NOSUID = MS_FLAG_NAMES["MS_NOSUID"]
MS_NODEV = MS_FLAG_NAMES["MS_NODEV"]
MS_NOEXEC = MS_FLAG_NAMES["MS_NOEXEC"]
MS_SYNCHRONOUS = MS_FLAG_NAMES["MS_SYNCHRONOUS"]
MS_REMOUNT = MS_FLAG_NAMES["MS_REMOUNT"]
MS_MANDLOCK = MS_FLAG_NAMES["MS_MANDLOCK"]
MS_DIRSYNC = MS_FLAG_NAMES["MS_DIRSYNC"]
MS_NOSYMFOLLOW = MS_FLAG_NAMES["MS_NOSYMFOLLOW"]
MS_NOATIME = MS_FLAG_NAMES["MS_NOATIME"]
MS_NODIRATIME = MS_FLAG_NAMES["MS_NODIRATIME"]
MS_BIND = MS_FLAG_NAMES["MS_BIND"]
MS_MOVE = MS_FLAG_NAMES["MS_MOVE"]
MS_REC = MS_FLAG_NAMES["MS_REC"]
MS_SILENT = MS_FLAG_NAMES["MS_SILENT"]
MS_POSIXACL = MS_FLAG_NAMES["MS_POSIXACL"]
MS_UNBINDABLE = MS_FLAG_NAMES["MS_UNBINDABLE"]
MS_PRIVATE = MS_FLAG_NAMES["MS_PRIVATE"]
MS_SLAVE = MS_FLAG_NAMES["MS_SLAVE"]
MS_SHARED = MS_FLAG_NAMES["MS_SHARED"]
MS_RELATIME = MS_FLAG_NAMES["MS_RELATIME"]
MS_KERNMOUNT = MS_FLAG_NAMES["MS_KERNMOUNT"]
MS_I_VERSION = MS_FLAG_NAMES["MS_I_VERSION"]
MS_STRICTATIME = MS_FLAG_NAMES["MS_STRICTATIME"]
MS_LAZYTIME = MS_FLAG_NAMES["MS_LAZYTIME"]

MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

CLONE_NEWNS = 0x00020000
NS_GET_NSTYPE = 0xB703  # _IO(NSIO, 0x3), include/uapi/linux/nsfs.h: the CLONE_NEW* of an nsfs fd

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20
_RESOLVE_SAFE = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS  # safe=True

# the O_* values differ between architectures (O_DIRECTORY is 0o200000 on x86_64, 0o40000 on
# aarch64), so take them from Python's own build rather than hard-coding one arch
O_PATH = os.O_PATH
O_DIRECTORY = os.O_DIRECTORY
O_NOFOLLOW = os.O_NOFOLLOW
O_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = O_CLOEXEC
MOVE_MOUNT_F_SYMLINKS = 0x01
MOVE_MOUNT_F_AUTOMOUNTS = 0x02
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_AUTOMOUNTS = 0x20
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOVE_MOUNT_SET_GROUP = 0x100
MOVE_MOUNT_BENEATH = 0x200
MOUNT_ATTR_RDONLY = 0x01
MOUNT_ATTR_NOSUID = 0x02
MOUNT_ATTR_NODEV = 0x04
MOUNT_ATTR_NOEXEC = 0x08
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# ---- the ctypes table ------------------------------------------------------------------------


class OpenHow(ctypes.Structure):
    """``struct open_how`` (include/uapi/linux/openat2.h)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class MountAttr(ctypes.Structure):
    """``struct mount_attr`` (include/uapi/linux/mount.h, MOUNT_ATTR_SIZE_VER0)."""

    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


#: Syscalls glibc has no wrapper for (in every glibc we meet). Numbers of syscalls added since 5.1
#: are unified across architectures (arch/x86/entry/syscalls/syscall_64.tbl and
#: include/uapi/asm-generic/unistd.h agree), so x86_64 and aarch64 share them.
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442,
               "fchmodat2": 452, "statx": 332},
    "aarch64": {"open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442,
                "fchmodat2": 452, "statx": 291},  # statx (4.11) predates the unification
}

_c = ctypes
#: name -> (libc symbol, argtypes, restype). syscall(2) is variadic; on x86_64 and aarch64 Linux
#: integer and pointer varargs travel in the same registers as fixed ones, so one exact prototype
#: per system call is safe (the first argument is the syscall number).
SIGNATURES: dict[str, tuple[str, list[Any], Any]] = {
    "mount": ("mount", [_c.c_char_p, _c.c_char_p, _c.c_char_p, _c.c_ulong, _c.c_char_p],
              _c.c_int),
    "umount2": ("umount2", [_c.c_char_p, _c.c_int], _c.c_int),
    "unshare": ("unshare", [_c.c_int], _c.c_int),
    "setns": ("setns", [_c.c_int, _c.c_int], _c.c_int),
    "openat2": ("syscall", [_c.c_long, _c.c_int, _c.c_char_p, _c.POINTER(OpenHow), _c.c_size_t],
                _c.c_long),
    "open_tree": ("syscall", [_c.c_long, _c.c_int, _c.c_char_p, _c.c_uint], _c.c_long),
    "move_mount": ("syscall", [_c.c_long, _c.c_int, _c.c_char_p, _c.c_int, _c.c_char_p,
                               _c.c_uint], _c.c_long),
    "mount_setattr": ("syscall", [_c.c_long, _c.c_int, _c.c_char_p, _c.c_uint,
                                  _c.POINTER(MountAttr), _c.c_size_t], _c.c_long),
    "prctl": ("prctl", [_c.c_int, _c.c_ulong, _c.c_ulong, _c.c_ulong, _c.c_ulong], _c.c_int),
    # KernelHost's per-call hot path (below): statx(AT_EMPTY_PATH) gives Stat and the mount id
    # in one call; fchownat / fchmodat2 (6.6+) with AT_EMPTY_PATH act on an O_PATH fd without
    # a walk through /proc/self/fd/N
    "statx": ("syscall", [_c.c_long, _c.c_int, _c.c_char_p, _c.c_int, _c.c_uint, _c.c_void_p],
              _c.c_long),
    "fchownat": ("fchownat", [_c.c_int, _c.c_char_p, _c.c_uint, _c.c_uint, _c.c_int], _c.c_int),
    "fchmodat2": ("syscall", [_c.c_long, _c.c_int, _c.c_char_p, _c.c_uint, _c.c_uint],
                  _c.c_long),
    # ioctl(2) is variadic too; every request used here takes an int or a pointer, which
    # c_void_p carries in the same register (loop ioctls, below)
    "ioctl": ("ioctl", [_c.c_int, _c.c_ulong, _c.c_void_p], _c.c_int),
}

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39


@functools.cache
def _functions() -> dict[str, Callable[..., int]]:
    """Load libc once with ``use_errno=True`` and apply SIGNATURES (pyudev's loader)."""
    libc = ctypes.CDLL(None, use_errno=True)
    funcs: dict[str, Callable[..., int]] = {}
    for name, (symbol, argtypes, restype) in SIGNATURES.items():
        # CDLL.__getitem__ makes a fresh function object each time, so the several prototypes
        # of syscall() do not overwrite each other's argtypes
        func = libc[symbol]
        func.argtypes = argtypes
        func.restype = restype
        funcs[name] = func
    return funcs


def _call(name: str, *args: Any, filename: str | None = None) -> int:
    """Call one SIGNATURES function: the one place where ``-1`` becomes ``OSError``."""
    if SIGNATURES[name][0] == "syscall":
        args = (_syscall_number(name), *args)
    result = _functions()[name](*args)
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), filename)
    return result


def _syscall_number(name: str) -> int:
    machine = platform.machine()
    try:
        return SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number known for {machine}") from None


# ---- KernelHost's hot path ---------------------------------------------------------------------

STATX_MNT_ID = 0x1000
#: what Stat holds: STATX_TYPE|MODE|NLINK|UID|GID|INO|SIZE, plus the mount id (Linux 5.8+)
STATX_WANTED = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x100 | 0x200 | STATX_MNT_ID
#: struct statx (include/uapi/linux/stat.h), as far as Stat needs it: mask, blksize, attributes,
#: nlink, uid, gid, mode, (pad), ino, size, then dev_major, dev_minor, mnt_id at offset 136
_STATX = struct.Struct("=IIQIIIH2xQQ88xIIQ")
_STATX_SIZE = 256
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _errno_error(path: str | None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), path)


class _Hot:
    """The SIGNATURES functions KernelHost calls on every operation, bound once together with
    their syscall numbers, and the ``open_how`` structs it passes (one per flags/mode/resolve).

    :func:`_call` looks the table up, asks platform.machine() and builds a fresh struct each
    time, which costs more than the openat2 itself (bench/startup.py, bench/signin.py); the hot
    path skips that. Errors are still ``OSError(errno, strerror, sandbox path)``. statx and
    fchmodat2 fall back to the older calls where the kernel lacks them (ENOSYS) or a seccomp
    filter refuses them (EPERM while the old call works)."""

    def __init__(self) -> None:
        funcs = _functions()
        self.openat2, self.mount, self.umount2 = funcs["openat2"], funcs["mount"], funcs["umount2"]
        self.statx, self.fchownat = funcs["statx"], funcs["fchownat"]
        self.fchmodat2 = funcs["fchmodat2"]
        # an unknown architecture gets -1: syscall(-1) fails with ENOSYS, like _call's lookup
        nr = SYSCALL_NUMBERS.get(platform.machine(), {})
        self.nr_openat2 = nr.get("openat2", -1)
        self.nr_statx = nr.get("statx", -1)
        self.nr_fchmodat2 = nr.get("fchmodat2", -1)
        self.have_statx = self.have_fchmodat2 = True
        self.hows: dict[tuple[int, int, int], OpenHow] = {}

    def how(self, flags: int, mode: int, resolve: int) -> OpenHow:
        key = (flags, mode, resolve)
        how = self.hows.get(key)
        if how is None:
            how = self.hows[key] = OpenHow(flags, mode, resolve)
        return how


@functools.cache
def _hot() -> _Hot:
    return _Hot()


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None, *, filename: str | None = None) -> None:
    """mount(2); ``filename`` names the failure (default: ``target``)."""
    _call("mount", _b(source), _b(target), _b(fstype), flags, _b(data),
          filename=target if filename is None else filename)


def umount2(target: str, flags: int = 0, *, filename: str | None = None) -> None:
    _call("umount2", _b(target), flags, filename=target if filename is None else filename)


def set_no_new_privs() -> None:
    """``prctl(PR_SET_NO_NEW_PRIVS, 1)``: exec can never gain privileges (minijail ``-n``)."""
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def get_no_new_privs() -> bool:
    return bool(_call("prctl", PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))


def unshare(flags: int) -> None:
    _call("unshare", flags)


def setns(fd: int, nstype: int, *, filename: str | None = None) -> None:
    _call("setns", fd, nstype, filename=filename)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0, *,
            filename: str | None = None) -> int:
    """openat2(2); returns the new fd."""
    how = OpenHow(flags, mode, resolve)
    return _call("openat2", dirfd, _b(path), ctypes.byref(how), ctypes.sizeof(how),
                 filename=path if filename is None else filename)


def open_tree(dirfd: int, path: str, flags: int, *, filename: str | None = None) -> int:
    return _call("open_tree", dirfd, _b(path), flags,
                 filename=path if filename is None else filename)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int, *,
               filename: str | None = None) -> None:
    _call("move_mount", from_dirfd, _b(from_path), to_dirfd, _b(to_path), flags,
          filename=to_path if filename is None else filename)


def mount_setattr(dirfd: int, path: str, flags: int, *, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0,
                  filename: str | None = None) -> None:
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _call("mount_setattr", dirfd, _b(path), flags, ctypes.byref(attr), ctypes.sizeof(attr),
          filename=path if filename is None else filename)


# ---- loop devices (include/uapi/linux/loop.h; drivers/block/loop.c) ------------------------------

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8+: LOOP_SET_FD + LOOP_SET_STATUS64 in one call, no race
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4  # detach when the last opener (e.g. the mounted filesystem) goes
LO_FLAGS_PARTSCAN = 8
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64
LO_KEY_SIZE = 32
LOOP_MAJOR = 7


class LoopInfo64(ctypes.Structure):
    """``struct loop_info64`` (include/uapi/linux/loop.h)."""

    _fields_ = [("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64),
                ("lo_rdevice", ctypes.c_uint64), ("lo_offset", ctypes.c_uint64),
                ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
                ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
                ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * LO_NAME_SIZE),
                ("lo_crypt_name", ctypes.c_uint8 * LO_NAME_SIZE),
                ("lo_encrypt_key", ctypes.c_uint8 * LO_KEY_SIZE),
                ("lo_init", ctypes.c_uint64 * 2)]


class LoopConfig(ctypes.Structure):
    """``struct loop_config`` (LOOP_CONFIGURE): backing fd, block size, info, reserved."""

    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32),
                ("info", LoopInfo64), ("reserved", ctypes.c_uint64 * 8)]


def ioctl(fd: int, request: int, arg: Any = None, *, filename: str | None = None) -> int:
    """ioctl(2) through the table; ``arg`` is an int, None or a ``ctypes.byref``."""
    return _call("ioctl", fd, request, arg, filename=filename)


def loop_ctl_get_free(ctl_fd: int) -> int:
    """``LOOP_CTL_GET_FREE`` on /dev/loop-control: the number of a free loop device (created if
    none is free). Only a hint: another process may bind it first (then LOOP_CONFIGURE is
    EBUSY and the caller asks again, as losetup does)."""
    return ioctl(ctl_fd, LOOP_CTL_GET_FREE, None, filename="/dev/loop-control")


def loop_configure(loop_fd: int, backing_fd: int, *, flags: int = 0, file_name: str = "",
                   filename: str | None = None) -> None:
    """Bind ``backing_fd`` to the loop device ``loop_fd`` with ``flags`` (``LO_FLAGS_*``).

    ``LOOP_CONFIGURE`` (5.8+) sets the fd and the flags atomically; on an older kernel (EINVAL
    or ENOTTY for the unknown request) it falls back to ``LOOP_SET_FD`` then
    ``LOOP_SET_STATUS64`` and clears the device again if the second call fails."""
    info = LoopInfo64(lo_flags=flags)
    name = os.fsencode(file_name)[:LO_NAME_SIZE - 1]
    ctypes.memmove(info.lo_file_name, name, len(name))
    config = LoopConfig(fd=backing_fd, info=info)
    try:
        ioctl(loop_fd, LOOP_CONFIGURE, ctypes.byref(config), filename=filename)
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    ioctl(loop_fd, LOOP_SET_FD, backing_fd, filename=filename)
    try:
        ioctl(loop_fd, LOOP_SET_STATUS64, ctypes.byref(info), filename=filename)
    except BaseException:
        loop_clr_fd(loop_fd)
        raise


def loop_clr_fd(loop_fd: int, *, filename: str | None = None) -> None:
    """``LOOP_CLR_FD``: detach now, or (while the device is still open elsewhere, e.g. by a
    lazily detached mount) mark it autoclear so it detaches with its last opener. ENXIO when
    it is not bound (already detached)."""
    ioctl(loop_fd, LOOP_CLR_FD, 0, filename=filename)


def loop_get_status(loop_fd: int, *, filename: str | None = None) -> LoopInfo64:
    """``LOOP_GET_STATUS64``: ``lo_device``/``lo_inode`` identify the backing file; ENXIO when
    the device is not bound."""
    info = LoopInfo64()
    ioctl(loop_fd, LOOP_GET_STATUS64, ctypes.byref(info), filename=filename)
    return info


# ---- MS_* names (re-exported for the jail CLI) -------------------------------------------------

#: ``MS_BIND|MS_REC`` for 0x5000 (systemd's ``mount_flags_to_string``); unknown bits in hex
mount_flags_to_string = mountflags.to_string
#: the reverse: ``MS_*`` names, decimal or ``0x`` numbers joined by ``|``; ValueError on junk
parse_mount_flags = mountflags.parse

_PROPAGATION_FLAGS = {Propagation.SHARED: MS_SHARED, Propagation.SLAVE: MS_SLAVE,
                      Propagation.PRIVATE: MS_PRIVATE, Propagation.UNBINDABLE: MS_UNBINDABLE}


def _ms_flags(flags: Iterable[str]) -> int:
    """host.MOUNT_FLAGS spelling (``ro``, ``nosuid`` ...) -> MS_* bits; ValueError if unknown."""
    return _option_bits(frozenset(flags))


@functools.lru_cache(maxsize=64)  # a pure function of a few flag sets; every remount asks
def _option_bits(flags: frozenset[str]) -> int:
    return mountflags.option_bits(flags)


def _propagation_flag(propagation: Propagation | str) -> int:
    try:  # a member, or its value: StrEnum members hash and compare as their strings
        flag = _PROPAGATION_FLAGS.get(propagation)  # type: ignore[call-overload]
    except TypeError:
        flag = None
    if flag is not None:
        return flag
    try:
        return _PROPAGATION_FLAGS[Propagation(propagation)]
    except ValueError:
        raise ValueError(f"unknown propagation type {propagation!r} "
                         "(want shared, slave, private or unbindable)") from None


# ---- KernelHost --------------------------------------------------------------------------------


@dataclass
class _Namespace:
    """One namespace this host knows by a name (created, or opened from a pinned file): its nsfs
    fd, and its own O_PATH fd of the sandbox root (an fd opened in one namespace refers to that
    namespace's mounts)."""

    ns_fd: int
    root_fd: int


def _fd_path(fd: int) -> str:
    """The magic link that names exactly the dentry ``fd`` refers to (proc(5))."""
    return f"/proc/self/fd/{fd}"


class _errors_as:  # noqa: N801 - used like the contextmanager it replaces
    """``with _errors_as(path):`` errors name the sandbox path, never /proc/self/fd/N or the host
    path (host.py). A class rather than @contextmanager, like :class:`_Closing`."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: object, exc: BaseException | None, tb: object) -> None:
        # an error that already names the sandbox path passes as it is: it may explain more
        # than strerror (a refused hard link or device node, SECURITY.md, "Ownership rule")
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename != self.path:
            raise OSError(exc.errno, os.strerror(exc.errno), self.path) from None


def _renamed(exc: OSError, path: str) -> OSError:
    """What ``_errors_as(path)`` raises for ``exc`` (for the hot paths, as try/except)."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, os.strerror(exc.errno), path)


class _Closing:
    """``with`` block that hands out ``value`` and closes ``fd`` at its end. KernelHost opens one
    to three fds per call; a generator-based context manager costs more than the syscalls it
    wraps (bench/startup.py), this one a fraction of it."""

    __slots__ = ("fd", "value")

    def __init__(self, fd: int, value: Any) -> None:
        self.fd, self.value = fd, value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _check_absolute(path: str) -> None:
    # interface paths are sandbox-absolute (host.py); the model gives EINVAL for others too
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)


def _to_stat(st: os.stat_result, mnt_id: int = 0) -> Stat:
    return Stat(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, size=st.st_size, ino=st.st_ino,
                dev=st.st_dev, nlink=st.st_nlink, mnt_id=mnt_id)


def _mnt_id(fd: int) -> int:
    """The id of the mount an fd lives on (``mnt_id:`` in /proc/self/fdinfo, Linux 3.15+): the
    same number as mountinfo field 1, so a caller can tell *which* mount it is looking at."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    return 0


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


class KernelHost:
    """The real kernel behind the Host interface, confined to a tmpfs sandbox root.

    ``root`` is the HOST path of the sandbox root; interface paths are sandbox-absolute (``/`` is
    ``root``). The constructor refuses (:class:`SandboxRefused`) in the machine's initial mount
    namespace, for ``/``, and for anything that is not a tmpfs mount point. Not thread-safe:
    unshare(CLONE_NEWNS) and setns(CLONE_NEWNS) need a single-threaded caller anyway.
    """

    kind = "kernel"
    #: openat2(2): with RESOLVE_IN_ROOT a concurrent rename or mount makes the lookup fail with
    #: EAGAIN "and the caller may choose to retry"
    _EAGAIN_RETRIES = 8

    def __init__(self, root: str) -> None:
        check_private_namespace()  # first, before anything is opened (safety rule 1)
        if not os.path.isabs(root) or os.path.realpath(root) == "/":
            raise SandboxRefused(f"sandbox root must be an absolute path other than '/': {root!r}")
        root_fd = os.open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)
        try:
            host_root = os.readlink(_fd_path(root_fd))
            if host_root == "/":
                raise SandboxRefused(f"sandbox root {root!r} is the host's '/'")
            check_tmpfs_mount_point(host_root, root_fd)
            ns_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | O_CLOEXEC)
        except BaseException:
            os.close(root_fd)
            raise
        self._root = host_root
        self._ns: dict[str, _Namespace] = {"init": _Namespace(ns_fd, root_fd)}
        self._current = "init"
        self._detached: dict[str, int] = {}  # handle -> open_tree fd
        self._handles = itertools.count(1)
        self._hot = _hot()
        self._statx_buf = ctypes.create_string_buffer(_STATX_SIZE)
        self._statx_addr = ctypes.addressof(self._statx_buf)

    @property
    def root(self) -> str:
        """Host path of the sandbox root (canonical, as /proc/self/mountinfo shows it)."""
        return self._root

    def close(self) -> None:
        """Close the detached trees, namespace and root fds (namespaces and detached trees die
        with their last reference)."""
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

    # ---- resolution ---------------------------------------------------------------------------

    @property
    def _root_fd(self) -> int:
        return self._ns[self._current].root_fd

    def _open(self, path: str, flags: int, *, safe: bool, mode: int = 0) -> int:
        """openat2(root_fd, path) confined to the sandbox: RESOLVE_IN_ROOT makes ``..`` and
        absolute symlinks stop at the sandbox root; ``safe`` adds RESOLVE_NO_SYMLINKS |
        RESOLVE_NO_MAGICLINKS (ELOOP on any symlink, host.py)."""
        if path[:1] != "/":
            _check_absolute(path)  # raises
        # "." from root_fd is root_fd's own dentry
        rel = (path.lstrip("/") or ".").encode(_FS_ENCODING, _FS_ERRORS)
        hot = self._hot
        key = (flags | O_CLOEXEC, mode, _RESOLVE_SAFE if safe else RESOLVE_IN_ROOT)
        how = hot.hows.get(key) or hot.how(*key)
        root_fd = self._ns[self._current].root_fd
        fd = hot.openat2(hot.nr_openat2, root_fd, rel, how, 24)  # OPEN_HOW_SIZE_VER0
        if fd >= 0:
            return fd
        for _ in range(self._EAGAIN_RETRIES - 1):
            err = ctypes.get_errno()
            if err != errno.EAGAIN:
                break
            fd = hot.openat2(hot.nr_openat2, root_fd, rel, how, 24)
            if fd >= 0:
                return fd
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)

    def _opened(self, path: str, flags: int, *, safe: bool) -> _Closing:
        """``with self._opened(...) as fd``: :meth:`_open`, closed at the end of the block."""
        fd = self._open(path, flags, safe=safe)
        return _Closing(fd, fd)

    def _parent(self, path: str, *, safe: bool) -> _Closing:
        """``with`` (O_PATH fd of the directory holding the last component, that component) for
        the *at() calls that must not follow the last component.

        A last component of ``.``/``..`` (or ``/`` itself) is resolved in full and acted on as
        ``.`` of that directory: ``..`` relative to the root fd would leave the sandbox, which
        RESOLVE_IN_ROOT only prevents inside openat2."""
        dirfd, name = self._parent_of(path, safe)
        return _Closing(dirfd, (dirfd, name))

    def _parent_of(self, path: str, safe: bool) -> tuple[int, str]:
        """What ``_parent`` hands out; the caller closes the fd."""
        _check_absolute(path)
        head, _, name = path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            head, name = path, "."
        return self._open(head or "/", O_PATH | O_DIRECTORY, safe=safe), name

    def _set_mode_exact(self, dirfd: int, name: str, mode: int, extra: int = 0) -> None:
        """chmod what mkdir/mkfifo just created: they apply the umask, host.py wants the exact
        mode. O_NOFOLLOW: if a symlink was swapped in meanwhile we fail instead of chmod'ing its
        target."""
        fd = os.open(name, O_PATH | O_NOFOLLOW | O_CLOEXEC | extra, dir_fd=dirfd)
        try:
            self._chmod_fd(fd, mode, name)
        finally:
            os.close(fd)

    def _stat_fd(self, fd: int, path: str) -> Stat:
        """Stat of exactly what ``fd`` refers to, with its mount id: one statx(AT_EMPTY_PATH);
        fstat plus /proc/self/fdinfo (:func:`_mnt_id`) where statx or a field is missing."""
        hot = self._hot
        if hot.have_statx:
            if not hot.statx(hot.nr_statx, fd, b"", AT_EMPTY_PATH, STATX_WANTED,
                             self._statx_addr):
                (mask, _, _, nlink, uid, gid, mode, ino, size, major, minor,
                 mnt_id) = _STATX.unpack_from(self._statx_buf)
                if mask & STATX_WANTED == STATX_WANTED:
                    return Stat(mode, uid, gid, size, ino, os.makedev(major, minor), nlink,
                                mnt_id)
            elif ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM):
                raise _errno_error(path)
            else:
                hot.have_statx = False  # kernel < 4.11, or a seccomp filter: fstat from now on
        with _errors_as(path):
            return _to_stat(os.fstat(fd), _mnt_id(fd))

    def _chmod_fd(self, fd: int, mode: int, path: str) -> None:
        """chmod exactly what the O_PATH ``fd`` refers to: fchmodat2(fd, "", AT_EMPTY_PATH)
        (Linux 6.6+), else chmod of its /proc/self/fd magic link (which costs a path walk)."""
        hot = self._hot
        if hot.have_fchmodat2:
            if not hot.fchmodat2(hot.nr_fchmodat2, fd, b"", mode, AT_EMPTY_PATH):
                return
            if ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM):
                raise _errno_error(path)
        with _errors_as(path):
            os.chmod(_fd_path(fd), mode)
        hot.have_fchmodat2 = False  # the old way works where fchmodat2 does not

    def _mount_at(self, source: bytes | None, fd: int, fstype: bytes | None, flags: int,
                  data: bytes | None, path: str) -> None:
        """mount(2) onto exactly the dentry ``fd`` refers to (its /proc/self/fd magic link);
        errors name ``path``."""
        if self._hot.mount(source, b"/proc/self/fd/%d" % fd, fstype, flags, data):
            raise _errno_error(path)

    def _open_no_device(self, path: str, flags: int) -> int:
        """Open an existing file for ``safe`` reading or writing, never a device node.

        Opening a device node can act (rewind a tape, block on a tty) and reading one can be
        endless (``/dev/zero``), so with ``safe`` every mount is treated as if it were ``nodev``:
        EACCES, what the kernel itself answers there. The type is checked on an O_PATH fd (which
        opens nothing), then exactly that inode is reopened through ``/proc/self/fd/N`` (proc(5)):
        no window in which another file could be swapped in. A final symlink is ELOOP."""
        with self._opened(path, O_PATH | O_NOFOLLOW, safe=True) as pfd, _errors_as(path):
            mode = os.fstat(pfd).st_mode
            if stat_mod.S_ISLNK(mode):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            if stat_mod.S_ISCHR(mode) or stat_mod.S_ISBLK(mode):
                raise OSError(errno.EACCES, "a device node: not opened (safe access treats "
                              "every mount as nodev)", path)
            return os.open(_fd_path(pfd), flags | O_CLOEXEC)

    # ---- namespaces ---------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return list(self._ns)

    def current_namespace(self) -> str:
        return self._current

    def new_namespace(self, name: str, propagation: Propagation | str | None = None) -> None:
        if name in self._ns:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), name)
        flag = None
        if propagation is not None and propagation != "unchanged":
            flag = _propagation_flag(propagation)  # validate before unsharing
        root_fd = self._unshare()
        ns_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | O_CLOEXEC)
        self._ns[name] = _Namespace(ns_fd, root_fd)
        self._current = name
        if flag is not None:
            # like `unshare -m --propagation X`, but on the sandbox root only: the rest of this
            # process's tree is private already (run_in_sandbox made "/" rprivate)
            mount(None, _fd_path(root_fd), None, flag | MS_REC, filename="/")

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
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        self._setns(name)
        self._current = name

    def _setns(self, name: str) -> None:
        cwd = _getcwd()  # setns(CLONE_NEWNS) resets cwd and root to the namespace's root
        setns(self._ns[name].ns_fd, CLONE_NEWNS, filename=name)
        _restore_cwd(cwd)

    def mountinfo(self, namespace: str | None = None) -> str:
        name = self._current if namespace is None else namespace
        if name not in self._ns:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        if name == self._current:
            text = _read_mountinfo()
        else:
            self._setns(name)
            try:
                text = _read_mountinfo()
            finally:
                self._setns(self._current)
        return rebase(text, self._root)

    # ---- mounts -------------------------------------------------------------------------------

    def mount_tmpfs(self, source: str, target: str, *, flags: frozenset[str] = frozenset(),
                    data: str = "", safe: bool = False) -> None:
        ms = _ms_flags(flags)
        with self._opened(target, O_PATH, safe=safe) as fd:
            self._mount_at(_b(source), fd, b"tmpfs", ms, _b(data or None), target)

    def bind(self, source: str, target: str, *, recursive: bool = False,
             safe: bool = False) -> None:
        flags = MS_BIND | (MS_REC if recursive else 0)
        sfd = self._open(source, O_PATH, safe=safe)
        try:
            tfd = self._open(target, O_PATH, safe=safe)
            try:
                self._mount_at(b"/proc/self/fd/%d" % sfd, tfd, None, flags, None, target)
            finally:
                os.close(tfd)
        finally:
            os.close(sfd)

    def move(self, source: str, target: str, *, safe: bool = False) -> None:
        with self._opened(source, O_PATH, safe=safe) as sfd, \
                self._opened(target, O_PATH, safe=safe) as tfd:
            self._mount_at(b"/proc/self/fd/%d" % sfd, tfd, None, MS_MOVE, None, target)

    def make(self, target: str, propagation: Propagation | str, *, recursive: bool = False,
             safe: bool = False) -> None:
        flags = _propagation_flag(propagation) | (MS_REC if recursive else 0)
        fd = self._open(target, O_PATH, safe=safe)
        try:
            self._mount_at(None, fd, None, flags, None, target)
        finally:
            os.close(fd)

    def umount(self, target: str, *, detach: bool = False, safe: bool = False) -> None:
        # Not umount2("/proc/self/fd/N"): an open fd pins the mount (EBUSY,
        # propagate_mount_busy()). Not umount2(host path) either: resolved from the real "/", it
        # enters a mount stacked on the sandbox root (a propagated copy can land there, §6.12),
        # which paths resolved from root_fd never do. So: canonicalize through openat2 (symlinks
        # followed inside the sandbox), then umount2 the last component relative to its parent
        # directory -- which pins only the parent mount. UMOUNT_NOFOLLOW: the canonical name is
        # no symlink we meant to follow.
        path = self._canonical(target, safe=safe)
        head, _, name = path.rpartition("/")
        flags = UMOUNT_NOFOLLOW | (MNT_DETACH if detach else 0)
        with self._opened(head or "/", O_PATH | O_DIRECTORY, safe=safe) as dirfd:
            # the name looked up from the parent directory's fd through its magic link: the
            # same lookup as from a cwd there (and the open fd, like a cwd, pins only the
            # parent mount), without changing and restoring the cwd. "/" itself: "." from
            # the root dir, which LOOKUP_MOUNTPOINT takes to its stack top
            rel = (name or ".").encode(_FS_ENCODING, _FS_ERRORS)
            if self._hot.umount2(b"/proc/self/fd/%d/%s" % (dirfd, rel), flags):
                raise _errno_error(target)

    def _canonical(self, path: str, *, safe: bool) -> str:
        """The symlink-free sandbox path of what ``path`` resolves to (d_path via the fd's magic
        link), refusing anything that is not under the sandbox root."""
        with self._opened(path, O_PATH, safe=safe) as fd:
            host_path = os.readlink(_fd_path(fd))
        if host_path == self._root:
            return "/"
        if host_path.startswith(self._root + "/"):
            return host_path[len(self._root):]
        raise SandboxRefused(f"{path!r} resolved to {host_path!r}, outside the sandbox")

    def remount_bind(self, target: str, flags: frozenset[str], *, safe: bool = False) -> None:
        # MS_REMOUNT|MS_BIND replaces the per-mount flags; path_mount() adds MNT_RELATIME when
        # no atime flag is given, which is the "relatime kept" of host.py
        ms = MS_REMOUNT | MS_BIND | _ms_flags(flags)
        fd = self._open(target, O_PATH, safe=safe)
        try:
            self._mount_at(None, fd, None, ms, None, target)
        finally:
            os.close(fd)

    # ---- kernel only: block devices (the loop vault, daemonstore.session.loop_vault) ----
    # Not part of the Host interface: the model has no block devices, so these stay here.

    def open_fd(self, path: str, flags: int, *, mode: int = 0o600, safe: bool = False) -> int:
        """An fd of a sandbox path (openat2 confined like every path here) for kernel-only code
        that needs the open file itself, e.g. a loop device's backing file. The caller owns
        (and closes) it; O_CLOEXEC is always added. ``mode`` only counts with O_CREAT (openat2
        refuses a mode without it: EINVAL)."""
        creating = flags & (os.O_CREAT | os.O_TMPFILE)
        return self._open(path, flags, safe=safe, mode=mode if creating else 0)

    def mount_block(self, device: str, target: str, fstype: str, *,
                    flags: frozenset[str] = frozenset(), data: str = "",
                    safe: bool = False) -> None:
        """``mount -t FSTYPE DEVICE TARGET`` of a block device. ``device`` is a *host* path
        (``/dev/loopN``: devices live outside the sandbox) and must be a block device; it is
        passed to mount(2) as given, so mountinfo shows it as the source (sign-out finds the
        loop device there). ``target`` is a sandbox path, resolved like every other."""
        st = os.stat(device)
        if not stat_mod.S_ISBLK(st.st_mode):
            raise OSError(errno.ENOTBLK, os.strerror(errno.ENOTBLK), device)
        with self._opened(target, O_PATH, safe=safe) as fd:
            mount(device, _fd_path(fd), fstype, _ms_flags(flags), data or None,
                  filename=target)

    # ---- detached trees and pinned namespaces (propagation-rules.md §2.9) ---------------------

    def clone_detached(self, source: str, *, recursive: bool = False,
                       safe: bool = False) -> str:
        """``open_tree(OPEN_TREE_CLONE[|AT_RECURSIVE])`` on exactly the dentry openat2 found; the
        tree lives in an anonymous namespace, held by its fd, until attached or dropped."""
        flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
        flags |= AT_RECURSIVE if recursive else 0
        with self._opened(source, O_PATH, safe=safe) as fd:
            tree_fd = open_tree(fd, "", flags, filename=source)
        handle = f"@{next(self._handles)}"
        self._detached[handle] = tree_fd
        return handle

    def attach_detached(self, handle: str, target: str, *, safe: bool = False) -> None:
        """``move_mount(MOVE_MOUNT_F_EMPTY_PATH)`` of a detached tree onto ``target`` (attached
        like a bind); the handle stays valid if the kernel refuses."""
        tree_fd = self._detached.get(handle)
        if tree_fd is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF), handle)
        with self._opened(target, O_PATH, safe=safe) as fd:
            move_mount(tree_fd, "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                       filename=target)
        os.close(self._detached.pop(handle))

    def drop_detached(self, handle: str) -> None:
        """Close a detached tree's fd: the last reference dissolves the anonymous namespace."""
        tree_fd = self._detached.pop(handle, None)
        if tree_fd is not None:
            os.close(tree_fd)

    def pin_namespace(self, name: str, path: str) -> None:
        """``mount --bind /proc/self/ns/mnt PATH`` with namespace ``name``'s nsfs fd as the
        source; the kernel's mnt_ns_loop() check gives EINVAL unless ``name`` is newer than the
        current namespace."""
        if name not in self._ns:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        with self._opened(path, O_PATH, safe=False) as fd:
            mount(_fd_path(self._ns[name].ns_fd), _fd_path(fd), None, MS_BIND, filename=path)

    def open_pinned_namespace(self, path: str, name: str) -> None:
        """Open the namespace file bound at ``path`` and register it as ``name``."""
        with self._opened(path, os.O_RDONLY, safe=False) as fd:
            try:
                is_mnt_ns = fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNS
            except OSError:  # ENOTTY: not an nsfs file at all
                is_mnt_ns = False
            if not is_mnt_ns:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
            ino = os.fstat(fd).st_ino
            if name in self._ns:
                if os.fstat(self._ns[name].ns_fd).st_ino != ino:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), name)
                return
            root_fd = self._root_fd_of(fd, ino)
            self._ns[name] = _Namespace(os.dup(fd), root_fd)

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
                check_tmpfs_mount_point(self._root, root_fd)
            except BaseException:
                os.close(root_fd)
                raise
            return root_fd
        finally:
            setns(self._ns[self._current].ns_fd, CLONE_NEWNS)
            _restore_cwd(cwd)

    # ---- files --------------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
              safe: bool = False) -> None:
        if not parents:
            self._mkdir_one(path, mode, safe)
            return
        prefix = ""
        for part in (p for p in path.split("/") if p):
            prefix += "/" + part
            try:
                self._mkdir_one(prefix, mode, safe)
            except FileExistsError:
                if not self.stat(prefix, safe=safe).is_dir:  # mkdir -p accepts only dirs
                    raise

    def _mkdir_one(self, path: str, mode: int, safe: bool) -> None:
        dirfd, name = self._parent_of(path, safe)  # try/finally: the hot path (see _Closing)
        try:
            os.mkdir(name, mode, dir_fd=dirfd)
            self._set_mode_exact(dirfd, name, mode, O_DIRECTORY)
        except OSError as exc:
            raise _renamed(exc, path) from None
        finally:
            os.close(dirfd)

    def stat(self, path: str, *, safe: bool = False) -> Stat:
        fd = self._open(path, O_PATH, safe=safe)
        try:
            return self._stat_fd(fd, path)
        finally:
            os.close(fd)

    def lstat(self, path: str, *, safe: bool = False) -> Stat:
        # O_PATH|O_NOFOLLOW opens a final symlink itself, even with RESOLVE_NO_SYMLINKS
        # (openat2(2)): safe forbids *following* symlinks, and lstat follows none at the end
        fd = self._open(path, O_PATH | O_NOFOLLOW, safe=safe)
        try:
            return self._stat_fd(fd, path)
        finally:
            os.close(fd)

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None:
        if follow_symlinks:
            fd = self._open(path, O_PATH, safe=safe)
            try:
                if safe:
                    _refuse_aliases(os.fstat(fd), path)  # checked on the fd we act on
                # fchownat(fd, "", AT_EMPTY_PATH): the inode the O_PATH fd refers to, as chown
                # of its /proc/self/fd magic link would, without the walk through /proc
                if self._hot.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH):
                    raise _errno_error(path)
            except OSError as exc:
                raise _renamed(exc, path) from None
            finally:
                os.close(fd)
            return
        with self._parent(path, safe=safe) as (dirfd, name), _errors_as(path):
            if safe:
                # fchownat(AT_SYMLINK_NOFOLLOW) has no fd of the entry itself: the check is on
                # the name in the pinned parent (callers use this only on root-owned /etc)
                _refuse_aliases(os.stat(name, dir_fd=dirfd, follow_symlinks=False), path)
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)

    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None:
        flags = O_PATH | (0 if follow_symlinks else O_NOFOLLOW)
        fd = self._open(path, flags, safe=safe)
        try:
            st = os.fstat(fd)
            if stat_mod.S_ISLNK(st.st_mode):
                # Linux has no lchmod: fchmodat(AT_SYMLINK_NOFOLLOW) on a symlink is EOPNOTSUPP
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
            if safe:
                _refuse_aliases(st, path)  # on the fd we act on: no window for a swap
            self._chmod_fd(fd, mode, path)
        except OSError as exc:
            raise _renamed(exc, path) from None
        finally:
            os.close(fd)

    def read_file(self, path: str, *, safe: bool = False) -> bytes:
        # O_NONBLOCK so a fifo without a writer reads as empty instead of hanging
        flags = os.O_RDONLY | os.O_NONBLOCK
        fd = self._open_no_device(path, flags) if safe else self._open(path, flags, safe=False)
        try:
            with _errors_as(path):
                return read_all(fd)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644, append: bool = False,
                   safe: bool = False) -> None:
        fd = self._open_for_write(path, mode, append, safe)
        try:
            with _errors_as(path):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _open_for_write(self, path: str, mode: int, append: bool, safe: bool) -> int:
        """Open for writing, creating with the exact ``mode`` (no umask).

        ``safe`` adds O_NOFOLLOW: ELOOP on a final symlink. O_NONBLOCK: a fifo without a reader
        is ENXIO, never a hang. Creation is tried with O_EXCL first so that only a file made
        here gets its mode set; EEXIST then ENOENT means a dangling symlink, whose target a
        plain O_CREAT open creates (open(2)) -- inside the sandbox, thanks to RESOLVE_IN_ROOT.
        """
        base = os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
        if safe:
            base |= O_NOFOLLOW
        try:
            fd = self._open(path, base | os.O_CREAT | os.O_EXCL, safe=safe, mode=mode)
        except FileExistsError:
            try:
                if safe:
                    return self._open_no_device(path, base & ~O_NOFOLLOW)
                return self._open(path, base, safe=safe)
            except FileNotFoundError:
                if safe:
                    raise
                fd = self._open(path, base | os.O_CREAT, safe=safe, mode=mode)
        with _errors_as(path):
            os.fchmod(fd, mode)
        return fd

    def symlink(self, target: str, path: str) -> None:
        with self._parent(path, safe=False) as (dirfd, name), _errors_as(path):
            os.symlink(target, name, dir_fd=dirfd)

    def readlink(self, path: str) -> str:
        with self._parent(path, safe=False) as (dirfd, name), _errors_as(path):
            return os.readlink(name, dir_fd=dirfd)

    def listdir(self, path: str, *, safe: bool = False) -> list[str]:
        with self._opened(path, os.O_RDONLY | O_DIRECTORY, safe=safe) as fd, _errors_as(path):
            return sorted(os.listdir(fd))

    def unlink(self, path: str, *, safe: bool = False) -> None:
        with self._parent(path, safe=safe) as (dirfd, name), _errors_as(path):
            os.unlink(name, dir_fd=dirfd)

    def rmdir(self, path: str, *, safe: bool = False) -> None:
        dirfd, name = self._parent_of(path, safe)
        try:
            os.rmdir(name, dir_fd=dirfd)
        except OSError as exc:
            raise _renamed(exc, path) from None
        finally:
            os.close(dirfd)

    def mkfifo(self, path: str, mode: int = 0o644) -> None:
        with self._parent(path, safe=False) as (dirfd, name), _errors_as(path):
            os.mkfifo(name, mode, dir_fd=dirfd)
            self._set_mode_exact(dirfd, name, mode)

    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except OSError:
            return False
        return True

    def statvfs(self, path: str, *, safe: bool = False) -> tuple[int, int]:
        # fstatvfs on the O_PATH fd openat2 found (fstatfs accepts O_PATH fds since Linux 3.12,
        # open(2)): the filesystem of exactly the dentry resolution reached, mounts crossed
        with self._opened(path, O_PATH, safe=safe) as fd, _errors_as(path):
            st = os.fstatvfs(fd)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _refuse_aliases(st: os.stat_result, path: str) -> None:
    """``safe`` chown/chmod change only what cannot be another file's name (SECURITY.md,
    "Ownership rule"): a directory, a symlink (lchown), or a regular file with one link.

    * a regular file with ``st_nlink > 1`` is a hard link: its other name may be a file the
      caller must never give away (a planted link to /etc/shadow in a vault; Linux's
      ``protected_hardlinks`` only stops *creating* such links, and not for root): EPERM;
    * a device node, fifo or socket is never a store directory, and chmod of a device node
      would open a device to the world: EPERM.
    """
    mode = st.st_mode
    if stat_mod.S_ISDIR(mode) or stat_mod.S_ISLNK(mode):
        return
    if stat_mod.S_ISREG(mode):
        if st.st_nlink == 1:
            return
        raise OSError(errno.EPERM, f"a hard link (link count {st.st_nlink}): not trusted for "
                      "ownership or mode changes", path)
    raise OSError(errno.EPERM, "a device node, fifo or socket: ownership and mode are never "
                  "changed through safe access", path)


def read_all(fd: int, size: int = 1 << 16) -> bytes:
    """Everything left to read from ``fd``, in ``size`` reads (the fd stays open)."""
    chunks = []
    while chunk := os.read(fd, size):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_mountinfo() -> str:
    # plain open/read/close: a text-mode file object adds an fstat, an ioctl and an lseek
    fd = os.open("/proc/self/mountinfo", os.O_RDONLY | O_CLOEXEC)
    try:
        data = read_all(fd, 1 << 17)
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")

__all__ = ["set_no_new_privs", "get_no_new_privs", "KernelHost", "SandboxRefused",
           "check_private_namespace", "mount", "umount2",
           "unshare", "setns", "openat2", "open_tree", "move_mount", "mount_setattr",
           "mount_flags_to_string", "parse_mount_flags", "SIGNATURES", "SYSCALL_NUMBERS",
           "run_in_sandbox", "kernel_available", "kernel_unavailable_reason", "require_root",
           "ioctl", "loop_ctl_get_free", "loop_configure", "loop_clr_fd", "loop_get_status",
           "LoopInfo64", "LoopConfig"]
