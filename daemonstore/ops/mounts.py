"""Plan steps that act on mounts and mount namespaces beyond the scenario language (plan layer:
building them is pure, ``apply`` only calls the Host it is given).

=========================  ====================================================  ==========
op                         does                                                  safe
=========================  ====================================================  ==========
:class:`SafeBind`          the scenario ``Bind``, resolved with ``safe``         yes
:class:`BindDir`           SafeBind of a directory, checked before and after     yes
:class:`SafeMake`          the scenario ``Make``, resolved with ``safe``         yes
:class:`RemountBind`       ``mount -o remount,bind,FLAGS``                       yes
:class:`ForceUmount`       umount, ``MNT_DETACH`` on ``EBUSY``                   yes
=========================  ====================================================  ==========

**Safe** ops resolve every path with ``safe=True``: no symlink in any component (``ELOOP``;
host.py), and on the kernel the mount then acts on the fd that resolution returned, so a symlink
planted in a user-controlled path (a vault, ``/run/daemon-store/<d>``) can never redirect a
mount (chromeos-facts.md §2, libbrillo's ``SafeFD``).

``to_line``: binds, propagation changes and umounts use the scenario language's own spelling
(so a dry run of those steps is valid scenario text); the others util-linux's
(``mount -o remount,bind,...``).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from daemonstore.host import Host, Stat
from daemonstore.ops.base import Op, quote
from daemonstore.ops.files import expect_dir
from daemonstore.ops.scenario import Bind, Make, Umount

__all__ = ["BindDir", "ForceUmount", "RemountBind", "SafeBind", "SafeMake"]


@dataclass(frozen=True)
class SafeBind(Bind):
    """``mount --bind S D`` resolved without following symlinks in either path."""

    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.bind(self.source, self.target, recursive=self.recursive, safe=self.safe)


@dataclass(frozen=True)
class SafeMake(Make):
    """``mount --make-shared P`` (etc.) resolved without following symlinks."""

    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.make(self.target, self.propagation, recursive=self.recursive, safe=self.safe)


@dataclass(frozen=True)
class BindDir(SafeBind):
    """``mount --bind S D`` of a directory, both paths resolved with ``safe``; the source is
    type-checked first so a file or fifo in the vault is never mounted. Undone by umount."""

    def apply(self, host: Host) -> None:
        source = expect_dir(host, self.source)
        before = host.stat(self.target, safe=True).mnt_id
        super().apply(host)
        # Re-check after acting (SECURITY.md): the path must now reach a *new* mount
        # whose root is the very directory checked above. A source swapped (renamed) between
        # the check and the bind, or a mount that landed elsewhere, fails here -- and the mount
        # this step made is taken off again, since the rollback only undoes completed steps.
        try:
            after: Stat | None = host.stat(self.target, safe=True)
        except OSError:
            after = None
        new_mount = after is not None and after.mnt_id != before
        if not (new_mount and after is not None
                and (after.dev, after.ino) == (source.dev, source.ino)):
            if new_mount:  # the new top is the mount this step made: never someone else's
                try:
                    ForceUmount(self.target).unmount(host)
                except OSError:
                    pass  # reported by the error below and the rollback
            raise OSError(errno.ESTALE, "the bind did not land where planned (the source "
                          "changed between the check and the mount)"
                          + ("; taken off again" if new_mount else ""), self.target)

    def undo(self) -> Op | None:
        return ForceUmount(self.target)


@dataclass(frozen=True)
class RemountBind(Op):
    """``mount -o remount,bind,FLAGS D``: ``Platform::Bind``'s second mount(2) call, which sets
    nosuid, nodev, noexec (and nosymfollow for cryptohome's binds) on the new mount, because
    flags given with a plain ``MS_BIND`` are ignored (chromeos-facts.md §2, "Mount flags")."""

    target: str
    flags: frozenset[str]

    def apply(self, host: Host) -> None:
        host.remount_bind(self.target, self.flags, safe=True)

    def to_line(self) -> str:
        return f"mount -o remount,bind,{','.join(sorted(self.flags))} {quote(self.target)}"


@dataclass(frozen=True)
class ForceUmount(Umount):
    """``Mounter::ForceUmount`` (chromeos-facts.md §2, "Unmount at sign-out"): a plain umount, and
    on ``EBUSY`` a lazy ``MNT_DETACH`` as the fallback. The mount then leaves the namespace at
    once; the kernel frees it when its last user goes. (The original syncs before the detach;
    a Host has no sync, and tmpfs-backed sandboxes have nothing to flush.)"""

    def unmount(self, host: Host) -> bool:
        """Unmount; True when it had to fall back to the lazy detach."""
        try:
            host.umount(self.target, safe=True)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            host.umount(self.target, detach=True, safe=True)
            return True
        return False

    def apply(self, host: Host) -> None:
        self.unmount(host)

    def to_line(self) -> str:
        return f"umount {quote(self.target)}  # umount -l on EBUSY"
