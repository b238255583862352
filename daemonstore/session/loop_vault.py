"""Loop-device vaults, plan layer: the steps that give a user a vault that is an ext4 image on a
loop device (``--vault loop``), standing in for cryptohome's dm-crypt / ext4-on-loop vaults.

The image ``/home/.shadow/<H>/vault.img`` (64 MiB, sparse) lives inside the sandbox and is made on
first use; at sign-in it is attached to a loop device and mounted on ``/home/.shadow/<H>/mount``
with cryptohome's flags (``MountAndPush``: nosuid, nodev, noexec, nosymfollow; ``discard`` as
PerformEphemeralMount mounts its ext4 loop; docs/chromeos.md §2.6); sign-out unmounts it and
clears the device. The mechanism (loop ioctls, mkfs, the uevent wait) is
:mod:`daemonstore.kernel.loop`, imported only where a loop vault is asked for.

The steps (:class:`CreateVaultImage`, :class:`MountLoopVault`, :class:`LoopVaultUmount`) are pure
records like every other step; their ``apply`` needs a :class:`~daemonstore.kernel.KernelHost`
(the model has no block devices: :func:`unavailable_reason` refuses ``--vault loop`` there at
plan time).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from shlex import quote as _q
from typing import TYPE_CHECKING

from daemonstore.host import Host
from daemonstore.ops import ForceUmount, Op

if TYPE_CHECKING:
    from daemonstore.kernel import KernelHost

__all__ = [
    "IMAGE_SIZE",
    "MOUNT_DATA",
    "MOUNT_FLAGS",
    "CreateVaultImage",
    "LoopVaultUmount",
    "MountLoopVault",
    "unavailable_reason",
]

IMAGE_SIZE = 64 << 20
#: MountAndPush's flags (kDefaultMountFlags | MS_NOSYMFOLLOW, docs/chromeos.md §2.4)
MOUNT_FLAGS = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})
#: PerformEphemeralMount mounts its ext4 loop with ``discard``: freed blocks punch holes in the
#: sparse image again
MOUNT_DATA = "discard"


def unavailable_reason(host: Host) -> str | None:
    """Why a loop vault cannot work on ``host`` (None: it can); the sign-in planner asks before
    it plans one."""
    if host.kind != "kernel":
        return (f"the loop vault needs the kernel backend (block devices, loop ioctls, ext4); "
                f"the {host.kind} host has none -- use the dir vault there")
    from daemonstore.kernel import loop  # the kernel only where a loop vault is asked for

    return loop.driver_missing()


def _kernel_host(host: Host) -> KernelHost:
    reason = unavailable_reason(host)
    if reason is not None:
        raise OSError(errno.EOPNOTSUPP, reason)
    return host  # type: ignore[return-value]  # kind == "kernel" is a KernelHost


# ---- plan steps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateVaultImage(Op):
    """``truncate -s SIZE IMAGE && mkfs.ext4 IMAGE``: a new user's vault, made once. Kept even
    if the sign-in fails later (it is the user's persistent storage, like ``/home/.shadow/H``)."""

    image: str
    size: int = IMAGE_SIZE

    def apply(self, host: Host) -> None:
        from daemonstore.kernel import loop

        loop.create_image(_kernel_host(host), self.image, self.size)

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
        from daemonstore.kernel import loop

        loop.mount_image(_kernel_host(host), self.image, self.target, fstype="ext4",
                         flags=MOUNT_FLAGS, data=MOUNT_DATA)

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

    def unmount(self, host: Host, on_busy: Callable[[Host], object] | None = None) -> bool:
        from daemonstore.kernel import loop

        lazy = super().unmount(host, on_busy)
        loop.detach_image(_kernel_host(host), self.image)
        return lazy

    def to_line(self) -> str:
        return (f"umount {_q(self.target)}  # umount -l on EBUSY; then LOOP_CLR_FD of the loop "
                f"device of {_q(self.image)}")
