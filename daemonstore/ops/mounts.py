"""Plan steps that act on mounts and mount namespaces beyond the scenario language (plan layer:
building them is pure, ``apply`` only calls the Host it is given).

===========================  ===================================================  =====
op                           does                                                 safe
===========================  ===================================================  =====
:class:`SafeBind`            the scenario ``Bind``, resolved with ``safe``        yes
:class:`BindDir`             SafeBind of a directory, checked before and after    yes
:class:`SafeMake`            the scenario ``Make``, resolved with ``safe``        yes
:class:`MakeStore`           MakeDir, Chown, SafeBind, SafeMake of one store      yes
:class:`RemountBind`         ``mount -o remount,bind,FLAGS``                      field
:class:`ForceUmount`         umount, ``MNT_DETACH`` on ``EBUSY``                  yes
:class:`Unshare`             the jail's new namespace (``unshare``, ``-K`` mode)  no
:class:`EnterNamespaceFile`  the jail's ``setns`` into a namespace file (``-V``)  no
:class:`PinTree`             ``open_tree`` clone, held in :class:`DetachedTrees`  no
:class:`AttachTree`          ``move_mount`` of a pinned tree                      no
===========================  ===================================================  =====

**Safe** ops resolve every path with ``safe=True``: no symlink in any component (``ELOOP``;
host.py), and on the kernel the mount then acts on the fd that resolution returned, so a symlink
planted in a user-controlled path (a vault, ``/run/daemon-store/<d>``) can never redirect a
mount (docs/chromeos.md §2.5, libbrillo's ``SafeFD``); RemountBind's ``safe`` field defaults to
it. The jail's ops follow symlinks as minijail does: their paths come from the daemon's own
command line.

``to_line``: binds, propagation changes and umounts use the scenario language's own spelling
(so a dry run of those steps is valid scenario text); the others util-linux's
(``mount -o remount,bind,...``) or the syscall's (``open_tree``, ``move_mount``, ``setns``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from daemonstore.host import Host, Propagation, Stat
from daemonstore.ops.base import Op, quote
from daemonstore.ops.files import Chown, MakeDir, expect_dir
from daemonstore.ops.scenario import Bind, Make, NewNamespace, Umount
from daemonstore.records import fast_init

__all__ = [
    "AttachTree",
    "BindDir",
    "DetachedTrees",
    "EnterNamespaceFile",
    "ForceUmount",
    "MakeStore",
    "PinTree",
    "RemountBind",
    "SafeBind",
    "SafeMake",
    "Unshare",
]


@fast_init  # startup builds one per store (records.py)
@dataclass(frozen=True)
class SafeBind(Bind):
    """``mount --bind S D`` resolved without following symlinks in either path."""

    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.bind(self.source, self.target, recursive=self.recursive, safe=self.safe)


@fast_init  # startup builds one per store (records.py)
@dataclass(frozen=True)
class SafeMake(Make):
    """``mount --make-shared P`` (etc.) resolved without following symlinks."""

    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.make(self.target, self.propagation, recursive=self.recursive, safe=self.safe)


@fast_init  # startup builds one per store (records.py)
@dataclass(frozen=True)
class MakeStore(Op):
    """Startup's four steps for a missing store, as one op: ``mkdir -m MODE P``, ``chown
    UID:GID P``, ``mount --bind P P``, ``mount --make-shared P`` (:meth:`parts`), applied by one
    ``Host.make_store`` call (one Python call on the kernel instead of four; the same system
    calls, issue 14 item 6). Printed and reported as its four parts (:func:`~daemonstore.ops.
    base.flatten`); a failure says which part failed and which were done (``steps_done``)."""

    path: str
    mode: int
    uid: int
    gid: int

    def parts(self) -> tuple[Op, ...]:
        path = self.path
        return (MakeDir(path, self.mode), Chown(path, self.uid, self.gid),
                SafeBind(path, path), SafeMake(path, Propagation.SHARED))

    def apply(self, host: Host) -> None:
        host.make_store(self.path, self.mode, self.uid, self.gid, safe=True)

    def to_line(self) -> str:
        return "\n".join(op.to_line() for op in self.parts())


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
    flags given with a plain ``MS_BIND`` are ignored (docs/chromeos.md §2.4); the
    jail makes the same call for a ``-k``/``-b`` bind's flags, as minijail does for ``-b``
    read-only."""

    target: str
    flags: frozenset[str]
    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.remount_bind(self.target, self.flags, safe=self.safe)

    def to_line(self) -> str:
        return f"mount -o remount,bind,{','.join(sorted(self.flags))} {quote(self.target)}"


@dataclass(frozen=True)
class ForceUmount(Umount):
    """``Mounter::ForceUmount`` (docs/chromeos.md §2.7): a plain umount, and
    on ``EBUSY`` a lazy ``MNT_DETACH`` as the fallback. The mount then leaves the namespace at
    once; the kernel frees it when its last user goes. Before the detach the mount's
    filesystem is flushed (``syncfs``), as the original syncs: whatever the holders write
    afterwards goes to a vault nobody can reach any more."""

    def unmount(self, host: Host, on_busy: Callable[[Host], object] | None = None) -> bool:
        """Unmount; True when it had to fall back to the lazy detach. ``on_busy`` is called
        on EBUSY, before the flush and the detach, while the busy mount is still in place
        (sign-out finds its holders there)."""
        try:
            host.umount(self.target, safe=True)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            if on_busy is not None:
                on_busy(host)
            host.syncfs(self.target, safe=True)
            host.umount(self.target, detach=True, safe=True)
            return True
        return False

    def apply(self, host: Host) -> None:
        self.unmount(host)

    def to_line(self) -> str:
        return f"umount {quote(self.target)}  # umount -l on EBUSY"


# ---- the jail's namespace and detached-tree steps ----------------------------------------------


@dataclass(frozen=True)
class Unshare(NewNamespace):
    """``unshare(CLONE_NEWNS)`` then minijail's ``-K`` remount of the whole new tree: the
    scenario's ``ns`` with minijail's fourth mode (``unbindable``) too, and the mode always
    printed (``unchanged`` for a bare ``-K``)."""

    def __post_init__(self) -> None:
        if self.propagation != "unchanged":
            Propagation(self.propagation)  # ValueError for anything else

    def to_line(self) -> str:
        return f"ns {self.name} --propagation {self.propagation}"


@dataclass(frozen=True)
class EnterNamespaceFile(Op):
    """``setns`` into the mount namespace file bound at ``path`` (minijail ``-V``), registered
    on the Host as ``name``."""

    path: str
    name: str

    def apply(self, host: Host) -> None:
        host.open_pinned_namespace(self.path, self.name)
        host.use_namespace(self.name)

    def to_line(self) -> str:
        return f"setns {quote(self.path)}  # as {self.name}"


@dataclass
class DetachedTrees:
    """The detached trees of one plan by key (``open_tree`` fds on the kernel), shared by its
    :class:`PinTree` and :class:`AttachTree` steps. Whoever applies the plan calls
    :meth:`close` at the end, so a tree pinned but never attached (a later step failed) is
    dropped, not leaked."""

    handles: dict[str, str] = field(default_factory=dict)

    def close(self, host: Host) -> None:
        for handle in self.handles.values():
            host.drop_detached(handle)
        self.handles.clear()


@dataclass(frozen=True)
class PinTree(Op):
    """``open_tree(SOURCE, OPEN_TREE_CLONE[|AT_RECURSIVE])``: a copy of SOURCE's mount (tree)
    made now and held detached under ``key`` until :class:`AttachTree`, so that a later mount
    over SOURCE's path cannot hide it."""

    key: str
    source: str
    recursive: bool
    trees: DetachedTrees = field(default_factory=DetachedTrees, kw_only=True, compare=False,
                                 repr=False)

    def apply(self, host: Host) -> None:
        self.trees.handles[self.key] = host.clone_detached(self.source, recursive=self.recursive)

    def to_line(self) -> str:
        rec = "|AT_RECURSIVE" if self.recursive else ""
        return f"open_tree {quote(self.source)} OPEN_TREE_CLONE{rec}  # -> {self.key}"


@dataclass(frozen=True)
class AttachTree(Op):
    """``move_mount`` of the tree pinned under ``key`` onto ``target`` (attached and propagated
    like a bind)."""

    key: str
    target: str
    trees: DetachedTrees = field(default_factory=DetachedTrees, kw_only=True, compare=False,
                                 repr=False)

    def apply(self, host: Host) -> None:
        host.attach_detached(self.trees.handles.pop(self.key), self.target)

    def to_line(self) -> str:
        return f"move_mount {self.key} {quote(self.target)}"
