"""Loop-device vaults, kernel layer: each user's vault is an ext4 image on a loop device
(``--vault loop``), standing in for cryptohome's dm-crypt / ext4-on-loop vaults.

The image ``/home/.shadow/<H>/vault.img`` (64 MiB, sparse) lives inside the sandbox; it is made
with ``mkfs.ext4`` (e2fsprogs) on first use. At sign-in it is attached to a free loop device with
the loop ioctls of :mod:`daemonstore.kernel` (``LOOP_CTL_GET_FREE``, then ``LOOP_CONFIGURE`` with
``LO_FLAGS_AUTOCLEAR``) and mounted on ``/home/.shadow/<H>/mount`` with cryptohome's flags
(``MountAndPush``: nosuid, nodev, noexec, nosymfollow; ``discard`` as PerformEphemeralMount
mounts its ext4 loop; chromeos-facts.md §2).

Waiting for the block device: udev rules are what ChromeOS waits on; here there is no udevd, so
a pyudev monitor listens to the *kernel's* uevents (``Monitor.from_netlink(source="kernel")``,
subsystem ``block``). It is started before the device is bound, and sign-in goes on when the
``change`` uevent that ``loop_configure()`` sends for that loop device has arrived (or fails after
a timeout) -- never a sleep.

Detaching: ``LO_FLAGS_AUTOCLEAR`` detaches the device when its last opener goes, so a crash or
a dying sandbox namespace cannot leak it; sign-out (and a sign-in rollback) still issues an
explicit ``LOOP_CLR_FD`` after the umount. A loop device is only ever cleared after
``LOOP_GET_STATUS64`` shows that its backing file is *our* image (same device and inode): loop
devices are global, and one we did not bind is never touched.

The plan steps (:class:`CreateVaultImage`, :class:`MountLoopVault`, :class:`LoopVaultUmount`) are
pure records like every other step; their ``apply`` needs a :class:`~daemonstore.kernel.KernelHost`
(the model has no block devices: ``--vault loop`` on the model is refused at plan time).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from shlex import quote as _q
from typing import TYPE_CHECKING, Any

from daemonstore.host import Host
from daemonstore.ops import ForceUmount, Op

if TYPE_CHECKING:
    from daemonstore.kernel import KernelHost

__all__ = [
    "IMAGE_SIZE",
    "MOUNT_DATA",
    "MOUNT_FLAGS",
    "AttachedLoop",
    "CreateVaultImage",
    "LoopVaultUmount",
    "MountLoopVault",
    "Uevent",
    "attach",
    "create_image",
    "detach_image",
    "loop_devices_of",
    "mkfs_command",
    "mount_vault",
    "unavailable_reason",
]

IMAGE_SIZE = 64 << 20
#: MountAndPush's flags (kDefaultMountFlags | MS_NOSYMFOLLOW, chromeos-facts.md §2)
MOUNT_FLAGS = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})
#: PerformEphemeralMount mounts its ext4 loop with ``discard``: freed blocks punch holes in the
#: sparse image again
MOUNT_DATA = "discard"
#: how long to wait for the loop device's uevent (the kernel sends it before LOOP_CONFIGURE
#: returns, so this only matters when something is badly wrong)
UEVENT_TIMEOUT = 10.0
LOOP_CONTROL = "/dev/loop-control"
#: where mkfs.ext4 lives on Debian (e2fsprogs) when PATH lacks the sbin directories
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


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


def unavailable_reason(host: Host) -> str | None:
    """Why a loop vault cannot work on ``host`` (None: it can)."""
    if host.kind != "kernel":
        return (f"the loop vault needs the kernel backend (block devices, loop ioctls, ext4); "
                f"the {host.kind} host has none -- use the dir vault there")
    if not os.path.exists(LOOP_CONTROL):
        return f"{LOOP_CONTROL} is missing (no loop driver)"
    return None


def _kernel_host(host: Host) -> KernelHost:
    reason = unavailable_reason(host)
    if reason is not None:
        raise OSError(errno.EOPNOTSUPP, reason)
    return host  # type: ignore[return-value]  # kind == "kernel" is a KernelHost


# ---- the image ---------------------------------------------------------------------------------


def create_image(host: Host, image: str, size: int = IMAGE_SIZE) -> None:
    """Create ``image`` (a sandbox path; EEXIST if present) as a sparse file of ``size`` bytes
    and make an ext4 filesystem in it. mkfs.ext4 gets the file as ``/dev/fd/N`` of the fd that
    the confined lookup opened, so it writes exactly that file, whatever the path does meanwhile.
    A failed mkfs removes the half-made image."""
    khost = _kernel_host(host)
    mkfs = mkfs_command()
    if mkfs is None:
        raise OSError(errno.ENOENT, "mkfs.ext4 not found: install e2fsprogs", image)
    fd = khost.open_fd(image, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
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


# ---- attaching, waiting, detaching -------------------------------------------------------------


def _monitor() -> Any:
    """A started pyudev monitor of kernel uevents for block devices (no udevd needed)."""
    import pyudev  # only the loop vault uses it; a model-only install never imports it

    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.filter_by("block")
    monitor.start()
    return monitor


def _wait_for(monitor: Any, name: str, timeout: float) -> tuple[Uevent, ...]:
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


def _same_file(info: Any, st: os.stat_result) -> bool:
    # lo_device is the backing file's st_dev in the kernel's encoding, as stat() reports it
    return int(info.lo_inode) == st.st_ino and int(info.lo_device) == st.st_dev


@contextmanager
def attach(host: Host, image: str, *,
           timeout: float = UEVENT_TIMEOUT) -> Iterator[tuple[AttachedLoop, int]]:
    """Bind ``image`` to a free loop device (autoclear) and wait for its uevent; yields the
    device and an open fd of it. The fd keeps the device bound (autoclear fires when the last
    opener goes), so mount it inside the block. On leaving the block the fd is closed; if the
    block raised, the device is cleared first (LOOP_CLR_FD) -- nothing is left attached."""
    from daemonstore import kernel

    khost = _kernel_host(host)
    backing = khost.open_fd(image, os.O_RDWR | os.O_NOFOLLOW, safe=True)
    try:
        # the monitor starts before the device is asked for: no uevent can be missed
        monitor = _monitor()
        try:
            number, loop_fd = _bind_free_device(kernel, backing, image)
            try:
                events = _wait_for(monitor, f"loop{number}", timeout)
                # the event says the kernel finished binding; check it is our image it bound
                if not _same_file(kernel.loop_get_status(loop_fd), os.fstat(backing)):
                    raise OSError(errno.EIO, f"/dev/loop{number} is not bound to {image}")
                yield AttachedLoop(number, events), loop_fd
            except BaseException:
                kernel.loop_clr_fd(loop_fd, filename=f"/dev/loop{number}")
                raise
            finally:
                os.close(loop_fd)
        finally:
            # pyudev has no close(): Monitor.__del__ (udev_monitor_unref) closes the netlink
            # socket, at once in CPython when the last reference goes
            del monitor
    finally:
        os.close(backing)


def _bind_free_device(kernel: Any, backing: int, image: str) -> tuple[int, int]:
    """LOOP_CTL_GET_FREE then LOOP_CONFIGURE; the free number is only a hint (another process
    may bind it first: EBUSY), so ask again a few times, as losetup does."""
    ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(16):
            number = kernel.loop_ctl_get_free(ctl)
            device = f"/dev/loop{number}"
            loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                kernel.loop_configure(loop_fd, backing, flags=kernel.LO_FLAGS_AUTOCLEAR,
                                      file_name=image, filename=device)
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


def mount_vault(host: Host, image: str, target: str, *,
                timeout: float = UEVENT_TIMEOUT) -> AttachedLoop:
    """Attach ``image``, wait for the device, mount its ext4 on ``target`` (sandbox path)."""
    with attach(host, image, timeout=timeout) as (loop, _fd):
        _kernel_host(host).mount_block(loop.device, target, "ext4", flags=MOUNT_FLAGS,
                                       data=MOUNT_DATA, safe=True)
    return loop


def loop_devices_of(host: Host, image: str) -> list[int]:
    """Numbers of the loop devices bound to ``image`` (sysfs says which file each device is
    bound to; the caller confirms with LOOP_GET_STATUS64 before acting)."""
    khost = _kernel_host(host)
    fd = khost.open_fd(image, os.O_PATH | os.O_NOFOLLOW, safe=True)
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


def detach_image(host: Host, image: str) -> list[str]:
    """``LOOP_CLR_FD`` of every loop device still bound to ``image``: after the umount, the
    autoclear has normally done it already and this finds nothing. A device is cleared only
    if LOOP_GET_STATUS64 confirms the backing file is ``image`` (same dev and inode). Returns
    the devices cleared (or marked to clear when their last opener goes)."""
    from daemonstore import kernel

    khost = _kernel_host(host)
    try:
        if not host.lstat(image, safe=True).is_file:
            return []
    except FileNotFoundError:
        return []
    fd = khost.open_fd(image, os.O_PATH | os.O_NOFOLLOW, safe=True)
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
            if not _same_file(kernel.loop_get_status(loop_fd, filename=device), ident):
                continue  # rebound to someone else's file meanwhile: not ours to clear
            kernel.loop_clr_fd(loop_fd, filename=device)
            cleared.append(device)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: detached meanwhile (autoclear)
                raise
        finally:
            os.close(loop_fd)
    return cleared


# ---- plan steps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateVaultImage(Op):
    """``truncate -s SIZE IMAGE && mkfs.ext4 IMAGE``: a new user's vault, made once. Kept even
    if the sign-in fails later (it is the user's persistent storage, like ``/home/.shadow/H``)."""

    image: str
    size: int = IMAGE_SIZE

    def apply(self, host: Host) -> None:
        create_image(host, self.image, self.size)

    def to_line(self) -> str:
        return f"truncate -s {self.size} {_q(self.image)} && mkfs.ext4 -q {_q(self.image)}"


@dataclass(frozen=True)
class MountLoopVault(Op):
    """``mount -o loop,nosuid,nodev,noexec,nosymfollow,discard IMAGE TARGET``: attach the image
    to a loop device (autoclear), wait for its uevent, mount the ext4. Undone by
    :class:`LoopVaultUmount`."""

    image: str
    target: str

    def apply(self, host: Host) -> None:
        mount_vault(host, self.image, self.target)

    def undo(self) -> Op | None:
        return LoopVaultUmount(self.target, image=self.image)

    def to_line(self) -> str:
        opts = ",".join(["loop", *sorted(MOUNT_FLAGS), MOUNT_DATA])
        return f"mount -t ext4 -o {opts} {_q(self.image)} {_q(self.target)}"


@dataclass(frozen=True)
class LoopVaultUmount(ForceUmount):
    """ForceUmount of a loop vault, then ``LOOP_CLR_FD`` of its device (if the autoclear has
    not already detached it; after a lazy detach the clear is deferred to the last user)."""

    image: str = field(default="", kw_only=True)

    def unmount(self, host: Host) -> bool:
        lazy = super().unmount(host)
        detach_image(host, self.image)
        return lazy

    def to_line(self) -> str:
        return (f"umount {_q(self.target)}  # umount -l on EBUSY; then LOOP_CLR_FD of the loop "
                f"device of {_q(self.image)}")
