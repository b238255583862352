"""Plan steps of sign-in and sign-out (the cryptohome side) on top of :mod:`daemonstore.ops.basic`:
frozen :class:`~daemonstore.ops.scenario.Op` records that act on a Host with ``safe=True`` (plan
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

from daemonstore.host import Host, Stat
from daemonstore.ops.basic import Chmod, Chown, MakeDir, SafeBind
from daemonstore.ops.scenario import Op, Umount

__all__ = [
    "BindDir",
    "DirChmod",
    "DirChown",
    "EnsureDir",
    "ForceUmount",
    "MakeTarget",
    "RemountBind",
    "RemoveDir",
    "RemoveTree",
    "expect_dir",
    "op_path",
    "undo_of",
]


def expect_dir(host: Host, path: str) -> Stat:
    """Raise unless ``path`` is a real directory: ``ELOOP`` for a symlink (in any component, since
    ``safe``), ``ENOTDIR`` for a file, fifo or anything else (SafeFD's ``kWrongType``). Returns
    its ``lstat``."""
    st = host.lstat(path, safe=True)
    if st.is_symlink:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    if not st.is_dir:
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    return st


@dataclass(frozen=True)
class MakeTarget(MakeDir):
    """``mkdir -m MODE P`` of a mount target (outside the user's shadow directory, or the
    vault's mount point, which sign-out removes too): a failed sign-in removes it again
    (rollback), so a refused sign-in leaves no trace outside the vault."""

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


@dataclass(frozen=True)
class EnsureDir(Op):
    """``install -d -m MODE -o UID -g GID P`` decided when applied: for a directory inside a
    vault the plan cannot look into (a loop vault's ext4 image is not mounted at plan time).
    Missing: mkdir, chown, chmod (chmod last: chown drops setgid, and mkdirat honours only
    01777, chromeos-facts.md §2 SafeCreateDirAndSetOwnershipAndPermissions). Present: owner and
    mode repaired where they differ. A symlink is ``ELOOP``, anything else not a directory
    ``ENOTDIR`` (SafeFD's kSymlinkDetected / kWrongType), so sign-in rolls back."""

    path: str
    mode: int
    uid: int
    gid: int

    def apply(self, host: Host) -> None:
        try:
            st = host.lstat(self.path, safe=True)
        except FileNotFoundError:
            host.mkdir(self.path, self.mode, safe=True)
            host.chown(self.path, self.uid, self.gid, safe=True)
            host.chmod(self.path, self.mode, safe=True)
            return
        expect_dir(host, self.path)
        if (st.uid, st.gid) != (self.uid, self.gid):
            host.chown(self.path, self.uid, self.gid, safe=True)
        if st.perm != self.mode or (st.uid, st.gid) != (self.uid, self.gid):
            host.chmod(self.path, self.mode, safe=True)

    def to_line(self) -> str:
        return (f"install -d -m {self.mode:04o} -o {self.uid} -g {self.gid} {_q(self.path)}"
                "  # or repair owner and mode")


@dataclass(frozen=True)
class RemoveTree(Op):
    """``rm -r --one-file-system P`` (``keep_top``: only what is inside P): for data that must
    not outlive a guest session (chromeos-facts.md §2 "Guest leftovers",
    CleanUpGuestDaemonDirectories). Nothing is followed (``safe``: a symlink is removed, never
    its target) and no mount is crossed: P itself being a mount point, or a mount met below it,
    is ``EBUSY`` -- a mount there means someone's live data, which is unmounted first, not
    deleted through."""

    path: str
    keep_top: bool = False

    def apply(self, host: Host) -> None:
        expect_dir(host, self.path)
        top = host.lstat(self.path, safe=True).mnt_id
        parent = os.path.dirname(self.path.rstrip("/")) or "/"
        if host.lstat(parent, safe=True).mnt_id != top:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), self.path)
        self._empty(host, self.path, top)
        if not self.keep_top:
            host.rmdir(self.path, safe=True)

    def _empty(self, host: Host, directory: str, mnt_id: int) -> None:
        for name in host.listdir(directory, safe=True):
            path = f"{directory.rstrip('/')}/{name}"
            st = host.lstat(path, safe=True)
            if not st.is_dir:
                host.unlink(path, safe=True)
                continue
            if st.mnt_id != mnt_id:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
            self._empty(host, path, mnt_id)
            host.rmdir(path, safe=True)

    def to_line(self) -> str:
        if self.keep_top:
            return f"find {_q(self.path)} -xdev -mindepth 1 -delete  # leftovers; the dir stays"
        return f"rm -r --one-file-system {_q(self.path)}"


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
