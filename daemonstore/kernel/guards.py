"""Kernel layer, safety guards: the checks KernelHost makes before it opens or mounts anything.

docs/architecture.md §10: the root is ``/`` or a sandbox. The machine's initial mount
namespace is refused unless the caller was given ``--system`` (the interlock, checked first in
:mod:`daemonstore.command`, and again here). A sandbox root (anything but ``/``) must be a tmpfs
mount point of its own that is not ``shared:``: a mount made below a shared root would propagate
to its peers outside the sandbox (SECURITY.md, hardening finding 6).

Reading only: two nsfs inodes and /proc/self/mountinfo; no ctypes, no mount.
"""

from __future__ import annotations

import os

from daemonstore.errors import DaemonStoreError
from daemonstore.mountinfo import MountInfoEntry
from daemonstore.mountinfo import parse as parse_mountinfo

__all__ = ["MNT_NS_INIT_INO", "SandboxRefused", "check_private_namespace", "check_sandbox_root",
           "check_tmpfs_mount_point", "in_initial_namespace"]

#: The initial mount namespace's fixed nsfs inode (include/uapi/linux/nsfs.h ``enum init_ns_ino``,
#: Linux 6.18+; older kernels give it a dynamic number >= 0xF0000000 like any other namespace).
MNT_NS_INIT_INO = 0xEFFFFFF8


class SandboxRefused(DaemonStoreError, PermissionError):
    """KernelHost will not run here: in the initial mount namespace, or on a bad sandbox root."""


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def in_initial_namespace() -> bool:
    """Is this process in the machine's initial mount namespace? Reads two nsfs inodes and
    nothing else; :class:`SandboxRefused` when that cannot be known.

    The initial namespace is PID 1's. Where /proc/1/ns is unreadable even for root (EACCES for an
    undumpable PID 1), the fixed ``MNT_NS_INIT_INO`` of 6.18+ identifies it; on an older kernel
    nothing can prove it, so the answer is a refusal. In a container whose PID 1 is its own init
    (a new PID namespace), PID 1's namespace is the container's: "initial" means the namespace
    of whoever is init here, which is what an init script asks.
    """
    own = os.stat("/proc/thread-self/ns/mnt").st_ino  # this thread's (hostlane.py)
    initial: set[int] = set()
    try:
        initial.add(os.stat("/proc/1/ns/mnt").st_ino)
    except PermissionError:
        pass
    if _kernel_at_least(6, 18):
        initial.add(MNT_NS_INIT_INO)
    if not initial:
        raise SandboxRefused("cannot identify the initial mount namespace (/proc/1/ns/mnt is "
                             "unreadable and the kernel is older than 6.18); refusing to mount")
    return own in initial


def check_private_namespace() -> None:
    """Raise :class:`SandboxRefused` if this process is in the machine's initial mount namespace
    (safety rule: never mount there without ``--system``), or if that cannot be known."""
    if in_initial_namespace():
        raise SandboxRefused(
            "refusing to run in the machine's initial mount namespace: unshare(CLONE_NEWNS) "
            "first (daemonstore.kernel.sandbox.run_in_sandbox does it in a forked child)")


def check_sandbox_root(host_root: str, root_fd: int) -> None:
    """A sandbox root (anything but ``/``): a tmpfs mount point (:func:`check_tmpfs_mount_point`)
    whose mount is not shared, so nothing mounted below it can reach another namespace."""
    entry = check_tmpfs_mount_point(host_root, root_fd)
    if entry.shared is not None:
        raise SandboxRefused(
            f"sandbox root {host_root!r} is a shared mount (shared:{entry.shared}): mounts below "
            "it would propagate to its peers outside the sandbox; make it private first "
            f"(mount --make-private {host_root})")


def check_tmpfs_mount_point(host_root: str, root_fd: int) -> MountInfoEntry:
    """Raise :class:`SandboxRefused` unless ``root_fd`` (an fd of ``host_root``) is the root of a
    tmpfs mount at ``host_root``: everything a host creates must vanish with that tmpfs. Returns
    that mount's mountinfo entry."""
    dev = os.fstat(root_fd).st_dev
    want = f"{os.major(dev)}:{os.minor(dev)}"
    with open("/proc/thread-self/mountinfo", encoding="utf-8",
              errors="surrogateescape") as f:
        entries = parse_mountinfo(f.read())
    for e in reversed(entries):  # the top of a stack is listed last
        if e.mount_point == host_root and e.dev == want and e.fstype == "tmpfs":
            return e
    raise SandboxRefused(f"sandbox root {host_root!r} is not a tmpfs mount point; mount a "
                         "tmpfs there first")
