"""Kernel layer, loop devices: an ext4 image file in the sandbox bound to a loop device, waited
for, mounted, and detached again (what ``--vault loop`` stands on; the plan steps and
cryptohome's flags are :mod:`daemonstore.session.loop_vault`).

* The loop ioctls (include/uapi/linux/loop.h; drivers/block/loop.c): ``LOOP_CTL_GET_FREE``, then
  ``LOOP_CONFIGURE`` with ``LO_FLAGS_AUTOCLEAR``, ``LOOP_GET_STATUS64``, ``LOOP_CLR_FD``.
* The image is made with ``mkfs.ext4`` (e2fsprogs), run on the fd the confined lookup opened.
* Waiting for the block device: udev rules are what ChromeOS waits on; here there is no udevd, so
  a monitor of the *kernel's* uevents (pyudev ``Monitor.from_netlink(source="kernel")``, subsystem
  ``block``) is started before the device is bound, and the wait ends with the ``change`` uevent
  that LOOP_CONFIGURE sends for that device (or fails after a timeout) -- never a sleep. The
  monitor is a parameter (:data:`MonitorFactory`): a fake with pyudev's ``poll`` shape stands in
  for it without a kernel.
* Detaching: ``LO_FLAGS_AUTOCLEAR`` detaches the device when its last opener goes, so a crash or
  a dying sandbox namespace cannot leak it; :func:`detach_image` still clears explicitly, and
  only a device that ``LOOP_GET_STATUS64`` shows bound to *our* image (same device and inode):
  loop devices are global, and one we did not bind is never touched.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from daemonstore.kernel.host import KernelHost
from daemonstore.kernel.syscalls import ioctl
from daemonstore.kernel.uapi import (
    LO_FLAGS_AUTOCLEAR,
    LO_KEY_SIZE,
    LO_NAME_SIZE,
    LOOP_CLR_FD,
    LOOP_CONFIGURE,
    LOOP_CTL_GET_FREE,
    LOOP_GET_STATUS64,
    LOOP_SET_FD,
    LOOP_SET_STATUS64,
)

__all__ = [
    "LOOP_CONTROL",
    "UEVENT_TIMEOUT",
    "AttachedLoop",
    "LoopConfig",
    "LoopInfo64",
    "MonitorFactory",
    "Uevent",
    "UeventMonitor",
    "attach",
    "block_uevent_monitor",
    "create_image",
    "detach_image",
    "driver_missing",
    "loop_clr_fd",
    "loop_configure",
    "loop_ctl_get_free",
    "loop_devices_of",
    "loop_get_status",
    "mkfs_command",
    "mount_image",
    "wait_for_change",
]

LOOP_CONTROL = "/dev/loop-control"
#: how long to wait for the loop device's uevent (the kernel sends it before LOOP_CONFIGURE
#: returns, so this only matters when something is badly wrong)
UEVENT_TIMEOUT = 10.0
#: where mkfs.ext4 lives on Debian (e2fsprogs) when PATH lacks the sbin directories
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"

# ---- the ioctls ----------------------------------------------------------------------------------


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


def loop_ctl_get_free(ctl_fd: int) -> int:
    """``LOOP_CTL_GET_FREE`` on /dev/loop-control: the number of a free loop device (created if
    none is free). Only a hint: another process may bind it first (then LOOP_CONFIGURE is
    EBUSY and the caller asks again, as losetup does)."""
    return ioctl(ctl_fd, LOOP_CTL_GET_FREE, None, filename=LOOP_CONTROL)


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


# ---- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uevent:
    """One kernel uevent the monitor received (pyudev ``Device`` fields)."""

    action: str
    sys_name: str
    subsystem: str
    device_node: str | None
    seqnum: int


@dataclass(frozen=True)
class AttachedLoop:
    """A loop device this process bound: ``/dev/loopN`` and the uevents seen for it while
    waiting (the last one is what ended the wait)."""

    number: int
    events: tuple[Uevent, ...] = ()

    @property
    def device(self) -> str:
        return f"/dev/loop{self.number}"

    @property
    def name(self) -> str:
        return f"loop{self.number}"


# ---- environment ------------------------------------------------------------------------------


def mkfs_command() -> str | None:
    """The path of ``mkfs.ext4`` (Debian package e2fsprogs), or None."""
    return shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path=_SBIN)


def driver_missing() -> str | None:
    """Why this machine has no loop devices to bind (None: it has)."""
    if not os.path.exists(LOOP_CONTROL):
        return f"{LOOP_CONTROL} is missing (no loop driver)"
    return None


# ---- the image ---------------------------------------------------------------------------------


def create_image(host: KernelHost, image: str, size: int) -> None:
    """Create ``image`` (a sandbox path; EEXIST if present) as a sparse file of ``size`` bytes
    and make an ext4 filesystem in it. mkfs.ext4 gets the file as ``/dev/fd/N`` of the fd that
    the confined lookup opened, so it writes exactly that file, whatever the path does meanwhile.
    A failed mkfs removes the half-made image."""
    mkfs = mkfs_command()
    if mkfs is None:
        raise OSError(errno.ENOENT, "mkfs.ext4 not found: install e2fsprogs", image)
    fd = host.open_fd(image, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                      mode=0o600, safe=True)
    try:
        os.ftruncate(fd, size)
        # -E nodiscard: the file is fresh and sparse, nothing to discard; -m 0: no blocks
        # reserved for root in a single user's vault
        argv = [mkfs, "-q", "-F", "-m", "0", "-L", "vault", "-E", "nodiscard",
                f"/dev/fd/{fd}"]
        done = subprocess.run(argv, pass_fds=(fd,), capture_output=True, text=True,
                              timeout=120, check=False)
    finally:
        os.close(fd)
    if done.returncode != 0:
        host.unlink(image, safe=True)
        raise OSError(errno.EIO, f"mkfs.ext4 failed (exit {done.returncode}): "
                      f"{done.stderr.strip() or done.stdout.strip()}", image)


# ---- waiting for the device ----------------------------------------------------------------------


class UeventMonitor(Protocol):
    """What the wait reads: pyudev ``Monitor.poll``, which gives a ``Device`` (``action``,
    ``sys_name``, ``subsystem``, ``device_node``, ``sequence_number``) or None on timeout."""

    def poll(self, timeout: float | None = None) -> Any: ...


#: makes a started monitor; called before the device is asked for, so no uevent is missed
MonitorFactory = Callable[[], UeventMonitor]


def block_uevent_monitor() -> UeventMonitor:
    """A started pyudev monitor of kernel uevents for block devices (no udevd needed)."""
    import pyudev  # only a loop device needs it; a model-only install never imports it

    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.filter_by("block")
    monitor.start()
    return monitor


def wait_for_change(monitor: UeventMonitor, name: str, timeout: float) -> tuple[Uevent, ...]:
    """Read uevents until the ``change`` of block device ``name`` (``loop_configure()`` sends
    it when the device is bound and sized); all of that device's events, in order.
    ``TimeoutError`` (ETIMEDOUT) when it does not come within ``timeout`` seconds."""
    seen: list[Uevent] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        device = monitor.poll(timeout=left)
        if device is None:
            break
        if device.sys_name != name or device.subsystem != "block":
            continue  # another disk's event (the filter is per subsystem only)
        seen.append(Uevent(device.action or "", device.sys_name, device.subsystem,
                           device.device_node, int(device.sequence_number or 0)))
        if device.action == "change":
            return tuple(seen)
    raise TimeoutError(errno.ETIMEDOUT, f"no change uevent for {name} within {timeout:g} s "
                       f"(saw {[e.action for e in seen] or 'nothing'})", f"/dev/{name}")


# ---- attaching, mounting, detaching ------------------------------------------------------------


def _same_file(info: LoopInfo64, st: os.stat_result) -> bool:
    # lo_device is the backing file's st_dev in the kernel's encoding, as stat() reports it
    return int(info.lo_inode) == st.st_ino and int(info.lo_device) == st.st_dev


@contextmanager
def attach(host: KernelHost, image: str, *, timeout: float = UEVENT_TIMEOUT,
           monitor: MonitorFactory = block_uevent_monitor) -> Iterator[tuple[AttachedLoop, int]]:
    """Bind ``image`` to a free loop device (autoclear) and wait for its uevent; yields the
    device and an open fd of it. The fd keeps the device bound (autoclear fires when the last
    opener goes), so mount it inside the block. On leaving the block the fd is closed; if the
    block raised, the device is cleared first (LOOP_CLR_FD) -- nothing is left attached."""
    backing = host.open_fd(image, os.O_RDWR | os.O_NOFOLLOW, safe=True)
    try:
        uevents = monitor()  # started before the device is asked for: no uevent is missed
        try:
            number, loop_fd = _bind_free_device(backing, image)
            try:
                events = wait_for_change(uevents, f"loop{number}", timeout)
                # the event says the kernel finished binding; check it is our image it bound
                if not _same_file(loop_get_status(loop_fd), os.fstat(backing)):
                    raise OSError(errno.EIO, f"/dev/loop{number} is not bound to {image}")
                yield AttachedLoop(number, events), loop_fd
            except BaseException:
                loop_clr_fd(loop_fd, filename=f"/dev/loop{number}")
                raise
            finally:
                os.close(loop_fd)
        finally:
            # pyudev has no close(): Monitor.__del__ (udev_monitor_unref) closes the netlink
            # socket, at once in CPython when the last reference goes
            del uevents
    finally:
        os.close(backing)


def _bind_free_device(backing: int, image: str) -> tuple[int, int]:
    """LOOP_CTL_GET_FREE then LOOP_CONFIGURE; the free number is only a hint (another process
    may bind it first: EBUSY), so ask again a few times, as losetup does."""
    ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(16):
            number = loop_ctl_get_free(ctl)
            device = f"/dev/loop{number}"
            loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                loop_configure(loop_fd, backing, flags=LO_FLAGS_AUTOCLEAR, file_name=image,
                               filename=device)
            except OSError as exc:
                os.close(loop_fd)
                if exc.errno == errno.EBUSY:
                    continue
                raise
            return number, loop_fd
    finally:
        os.close(ctl)
    raise OSError(errno.EBUSY, "every free loop device was taken before we could bind it",
                  LOOP_CONTROL)


def mount_image(host: KernelHost, image: str, target: str, *, fstype: str,
                flags: frozenset[str], data: str, timeout: float = UEVENT_TIMEOUT,
                monitor: MonitorFactory = block_uevent_monitor) -> AttachedLoop:
    """Attach ``image``, wait for the device, mount its ``fstype`` on ``target`` (a sandbox
    path) with ``flags`` and ``data``."""
    with attach(host, image, timeout=timeout, monitor=monitor) as (loop, _fd):
        host.mount_block(loop.device, target, fstype, flags=flags, data=data, safe=True)
    return loop


def loop_devices_of(host: KernelHost, image: str) -> list[int]:
    """Numbers of the loop devices bound to ``image`` (sysfs says which file each device is
    bound to; the caller confirms with LOOP_GET_STATUS64 before acting)."""
    fd = host.open_fd(image, os.O_PATH | os.O_NOFOLLOW, safe=True)
    try:
        want = os.readlink(f"/proc/self/fd/{fd}")  # d_path, as backing_file shows it
    finally:
        os.close(fd)
    found = []
    for path in sorted(glob.glob("/sys/block/loop*/loop/backing_file")):
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                if f.read().rstrip("\n") != want:
                    continue
        except OSError:
            continue  # detached meanwhile
        found.append(int(path.split("/")[3][len("loop"):]))
    return found


def detach_image(host: KernelHost, image: str) -> list[str]:
    """``LOOP_CLR_FD`` of every loop device still bound to ``image``: after the umount, the
    autoclear has normally done it already and this finds nothing. A device is cleared only
    if LOOP_GET_STATUS64 confirms the backing file is ``image`` (same dev and inode). Returns
    the devices cleared (or marked to clear when their last opener goes)."""
    try:
        if not host.lstat(image, safe=True).is_file:
            return []
    except FileNotFoundError:
        return []
    fd = host.open_fd(image, os.O_PATH | os.O_NOFOLLOW, safe=True)
    try:
        ident = os.fstat(fd)
    finally:
        os.close(fd)
    cleared = []
    for number in loop_devices_of(host, image):
        device = f"/dev/loop{number}"
        try:
            loop_fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not _same_file(loop_get_status(loop_fd, filename=device), ident):
                continue  # rebound to someone else's file meanwhile: not ours to clear
            loop_clr_fd(loop_fd, filename=device)
            cleared.append(device)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: detached meanwhile (autoclear)
                raise
        finally:
            os.close(loop_fd)
    return cleared
