"""Plan steps of sign-in and sign-out (the cryptohome side) on top of :mod:`daemonstore.plan_ops`:
frozen :class:`~daemonstore.scenario.Op` records that act on a Host with ``safe=True`` (plan
layer: building them is pure, ``apply`` only calls the Host it is given).

Every step here touches paths that a user can influence: the vault is user-controlled, and the
mount targets hang below it or below root-owned directories. So each step

* resolves its paths with ``safe=True`` (no symlink in *any* component, ``ELOOP`` otherwise), the
  way libbrillo's ``SafeFD`` walks every component with ``O_NOFOLLOW`` (chromeos-facts.md §2,
  "Protection against symlink and TOCTOU attacks");
* checks the type of a directory it is about to chown, chmod or bind with ``lstat`` first, so a
  regular file or fifo planted where a directory should be is refused (``ENOTDIR``) instead of
  being chmodded or mounted (SafeFD's ``kWrongType``);
* knows its own undo (:meth:`undo`), which the sign-in applier stacks to roll back in LIFO order.

``to_line`` renders each step for dry runs. Binds, propagation changes and umounts use the
scenario language's own spelling; the other steps use the coreutils / util-linux spelling
(``mkdir -m``, ``chown U:G``, ``chmod``, ``mount -o remount,bind,...``, ``rmdir``).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from shlex import quote as _q

from daemonstore.host import Host
from daemonstore.plan_ops import Chmod, Chown, MakeDir, SafeBind
from daemonstore.scenario import Op, Umount

__all__ = [
    "BindDir",
    "DirChmod",
    "DirChown",
    "ForceUmount",
    "MakeTarget",
    "RemountBind",
    "RemoveDir",
    "expect_dir",
    "op_path",
    "undo_of",
]


def expect_dir(host: Host, path: str) -> None:
    """Raise unless ``path`` is a real directory: ``ELOOP`` for a symlink (in any component, since
    ``safe``), ``ENOTDIR`` for a file, fifo or anything else (SafeFD's ``kWrongType``)."""
    st = host.lstat(path, safe=True)
    if st.is_symlink:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    if not st.is_dir:
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)


@dataclass(frozen=True)
class MakeTarget(MakeDir):
    """``mkdir -m MODE P`` of a mount target outside the user's shadow directory: a failed
    sign-in removes it again (rollback), so a refused sign-in leaves no trace outside the vault."""

    def undo(self) -> Op | None:
        return RemoveDir(self.path)


@dataclass(frozen=True)
class DirChown(Chown):
    """``chown UID:GID P`` of a directory: type-checked first, so a file or fifo swapped in
    since the plan was made is refused (``ENOTDIR``) rather than chowned."""

    def apply(self, host: Host) -> None:
        expect_dir(host, self.path)
        super().apply(host)


@dataclass(frozen=True)
class DirChmod(Chmod):
    """``chmod MODE P`` of a directory (type-checked first). Always issued after a mkdir,
    because ``mkdirat`` honours only the 01777 bits and drops setgid (chromeos-facts.md §2,
    ``SafeCreateDirAndSetOwnershipAndPermissions``; §7 item 6)."""

    def apply(self, host: Host) -> None:
        expect_dir(host, self.path)
        super().apply(host)


@dataclass(frozen=True)
class BindDir(SafeBind):
    """``mount --bind S D`` of a directory, both paths resolved with ``safe``; the source is
    type-checked first so a file or fifo in the vault is never mounted. Undone by umount."""

    def apply(self, host: Host) -> None:
        expect_dir(host, self.source)
        super().apply(host)

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
        return f"mount -o remount,bind,{','.join(sorted(self.flags))} {_q(self.target)}"


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
        return f"umount {_q(self.target)}  # umount -l on EBUSY"


@dataclass(frozen=True)
class RemoveDir(Op):
    """``rmdir P``: removes only an empty directory, so it can never lose data."""

    path: str

    def apply(self, host: Host) -> None:
        host.rmdir(self.path, safe=True)

    def to_line(self) -> str:
        return f"rmdir {_q(self.path)}"


def undo_of(op: Op) -> Op | None:
    """The step that reverses ``op`` after it succeeded, or None when nothing needs undoing (a
    propagation change or remount dies with its mount; a chmod/chown re-applies intended
    values; a directory inside the vault is kept)."""
    undo = getattr(op, "undo", None)
    return undo() if callable(undo) else None


def op_path(op: Op) -> str:
    """The path a step acts on, for error messages (its target, else its path)."""
    for attr in ("target", "path"):
        value = getattr(op, attr, None)
        if isinstance(value, str):
            return value
    paths = getattr(op, "paths", None)
    return paths[0] if paths else ""
