"""``ModelHost``: the pure in-memory backend of the Host interface.

A world starts as one namespace ``init`` whose root is a private tmpfs with source ``sandbox``
(docs/architecture.md §4, the scenario language). Paths resolve through the mount tree of the
current namespace as the kernel's path walk does (docs/propagation.md §2.0); mount operations
delegate to :class:`~daemonstore.model.propagation.MountTable`.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import replace

from daemonstore.host import (
    Propagation,
    Stat,
    lstat_many_by_calls,
    make_store_by_steps,
    make_stores_by_calls,
)
from daemonstore.model.busy import Hold, HoldOps, propagate_mount_busy
from daemonstore.model.files import FileOps
from daemonstore.model.fs import Dentry, err
from daemonstore.model.mounts import Mount, Namespace, preorder
from daemonstore.model.propagation import CL_COPY_MNT_NS_FILE, CL_COPY_UNBINDABLE, MountTable
from daemonstore.model.render import render_namespace
from daemonstore.model.resolve import Resolver
from daemonstore.model.space import statvfs as _statvfs
from daemonstore.model.trees import TreeOps
from daemonstore.model.watchers import MountWatchers, changes_mounts

_ATIME = frozenset({"noatime", "relatime", "strictatime"})
_PROPAGATIONS = {p.value for p in Propagation}


class ModelHost(Resolver, FileOps, TreeOps, HoldOps, MountWatchers):
    """The model world. Not thread-safe; cheap to create (one per test or scenario)."""

    kind = "model"
    #: RAM the model pretends to have: a tmpfs without ``size=`` gets half of it, ``size=N%``
    #: N percent (mm/shmem.c; see model/space.py). Set per instance to change it.
    memory_bytes = 8 << 30

    def __init__(self) -> None:
        self.table = MountTable()
        fs = self.table.new_fs("tmpfs", "sandbox")
        fs.root.mode = 0o755
        root = self.table.new_mount(fs, fs.root, frozenset({"relatime"}))
        ns = Namespace("init", root, host_parent_id=self.table.mount_ids.alloc())
        self.table.set_ns(root, ns)
        self._namespaces: dict[str, Namespace] = {"init": ns}
        self._detached: dict[str, Namespace] = {}
        self._pinned: dict[int, Namespace] = {}
        self._holds: dict[str, Hold] = {}
        self._watchers = {}  # Host.watch_mounts (model/watchers.py)
        self._next_watch = 0
        self.ns = ns
        self._current = "init"  # the name it was entered by (a pinned one may have two)

    # ---- namespaces ----------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def current_namespace(self) -> str:
        return self._current

    def new_namespace(self, name: str, propagation: Propagation | str | None = None) -> None:
        """``unshare(CLONE_NEWNS)`` (§2.8): copy every mount, unbindable ones too (as private)."""
        if name in self._namespaces:
            raise err(errno.EEXIST, name)
        ptype = _ptype(propagation, allow_unchanged=True)
        root = self.table.copy_tree(self.ns.root, self.ns.root.root, CL_COPY_UNBINDABLE)
        ns = Namespace(name, root, host_parent_id=self.table.mount_ids.alloc())
        self.table.set_ns(root, ns)
        self._namespaces[name] = ns
        self.ns = ns
        self._current = name
        if ptype is not None:
            self._change_type(root, ptype, recursive=True)

    def use_namespace(self, name: str) -> None:
        if name not in self._namespaces:
            raise err(errno.ENOENT, name)
        self.ns = self._namespaces[name]
        self._current = name

    # ---- mounts --------------------------------------------------------------------------------
    @changes_mounts
    def mount_tmpfs(self, source: str, target: str, *, flags: frozenset[str] = frozenset(),
                    data: str = "", safe: bool = False) -> None:
        """A new mount is attached like a bind of a private source (§2.3, SC10)."""
        dest, mp = self._mount_target(target, safe)
        if not mp.is_dir:
            raise err(errno.ENOTDIR, target)
        fs = self.table.new_fs("tmpfs", source, data)
        m = self.table.new_mount(fs, fs.root, _with_atime(frozenset(flags), frozenset()))
        self.table.attach_recursive(m, dest, mp, moving=False)

    @changes_mounts
    def bind(self, source: str, target: str, *, recursive: bool = False,
             safe: bool = False) -> None:
        """``do_loopback()`` (§2.4): EINVAL for an unbindable source, ENOTDIR on a type clash."""
        dest, mp = self._mount_target(target, safe)
        old, dentry = self.resolve(source, safe=safe)
        if old.unbindable:
            raise err(errno.EINVAL, source)
        if dentry.is_dir != mp.is_dir:
            raise err(errno.ENOTDIR, target)
        if recursive:
            copy = self.table.copy_tree(old, dentry, CL_COPY_MNT_NS_FILE)
        else:
            copy = self.table.clone(old, dentry, 0)
        self.table.attach_recursive(copy, dest, mp, moving=False)

    @changes_mounts
    def move(self, source: str, target: str, *, safe: bool = False) -> None:
        """``do_move_mount()`` (§2.6), checks in the kernel's order."""
        old, dentry = self.resolve(source, safe=safe)
        new_m, new_d = self.resolve(target, safe=safe)
        if dentry is not old.root:
            raise err(errno.EINVAL, source)
        if new_d.is_dir != dentry.is_dir:
            raise err(errno.EINVAL, target)
        dest, mp = self.table.top_of_stack(new_m, new_d)
        # the sandbox root hangs off a private host mount on the kernel, so it passes here
        if old.parent is not None and old.parent.shared:
            raise err(errno.EINVAL, source)
        if dest.shared and any(p.unbindable for p in preorder(old)):
            raise err(errno.EINVAL, source)
        p: Mount | None = dest
        while p is not None:  # mount_is_ancestor(): no moving a tree into itself
            if p is old:
                raise err(errno.ELOOP, target)
            p = p.parent
        self.table.attach_recursive(old, dest, mp, moving=True)

    @changes_mounts
    def make(self, target: str, propagation: Propagation | str, *, recursive: bool = False,
             safe: bool = False) -> None:
        """``do_change_type()`` (§2.2): the path must be the root of a mount (SC46)."""
        ptype = _ptype(propagation)
        assert ptype is not None
        m = self._mount_root(target, safe)
        self._change_type(m, ptype, recursive)

    def make_store(self, path: str, mode: int, uid: int, gid: int, *,
                   safe: bool = False) -> None:
        """Host.make_store: its four calls, one by one (the model has no layers to fuse; a
        subclass that overrides one of them is honoured)."""
        make_store_by_steps(self, path, mode, uid, gid, safe=safe)

    def make_stores(self, paths: Sequence[str], mode: int, uid: int, gid: int, *,
                    safe: bool = False) -> dict[int, OSError]:
        """Host.make_stores: one make_store per path (its definition)."""
        return make_stores_by_calls(self, paths, mode, uid, gid, safe=safe)

    def _change_type(self, m: Mount, ptype: str, recursive: bool) -> None:
        mounts = list(preorder(m)) if recursive else [m]
        if ptype == "shared":
            self.table.invent_group_ids(mounts)
        for p in mounts:
            self.table.change_propagation(p, ptype)

    @changes_mounts
    def umount(self, target: str, *, detach: bool = False, safe: bool = False) -> None:
        """``do_umount()`` (§2.7): unless ``detach`` (``MNT_DETACH`` takes the tree out at
        once, busy or not), EBUSY when ``propagate_mount_busy(mnt, 2)`` says so: a submount, or
        a file held on the mount or on a copy the umount propagates to (model/busy.py)."""
        m = self._mount_root(target, safe)
        if m is self.ns.root:
            # the kernel backend holds the sandbox root open: it is always busy
            raise err(errno.EBUSY if not detach else errno.EINVAL, target)
        if not detach and propagate_mount_busy(self.table, m):
            raise err(errno.EBUSY, target)
        self.table.umount_tree(m, propagate=True)

    @changes_mounts
    def remount_bind(self, target: str, flags: frozenset[str], *, safe: bool = False) -> None:
        m = self._mount_root(target, safe)
        m.flags = _with_atime(frozenset(flags), m.flags)

    def mountinfo(self, namespace: str | None = None) -> str:
        ns = self._namespaces[namespace] if namespace else self.ns
        return render_namespace(ns)

    # ---- helpers -------------------------------------------------------------------------------
    def _mount_target(self, target: str, safe: bool) -> tuple[Mount, Dentry]:
        m, d = self.resolve(target, safe=safe)
        return self.table.top_of_stack(m, d)

    def _mount_root(self, target: str, safe: bool) -> Mount:
        m, d = self.resolve(target, safe=safe)
        if d is not m.root:
            raise err(errno.EINVAL, target)
        return m

    def stat(self, path: str, *, safe: bool = False) -> Stat:
        m, d = self.resolve(path, safe=safe)
        return replace(d.stat(), mnt_id=m.id)

    def lstat(self, path: str, *, safe: bool = False) -> Stat:
        m, d = self.resolve(path, follow=False, safe=safe)
        return replace(d.stat(), mnt_id=m.id)

    def lstat_many(self, paths: Sequence[str], *, safe: bool = False) -> list[Stat | OSError]:
        """Host.lstat_many: one lstat per path (its definition; an overridden lstat counts)."""
        return lstat_many_by_calls(self, paths, safe=safe)

    def statvfs(self, path: str, *, safe: bool = False) -> tuple[int, int]:
        """Capacity and free space of the filesystem PATH resolves onto (model/space.py)."""
        return _statvfs(self.resolve(path, safe=safe)[1].fs, self.memory_bytes)


def _ptype(value: Propagation | str | None, allow_unchanged: bool = False) -> str | None:
    if value is None:
        return None
    text = value.value if isinstance(value, Propagation) else str(value)
    if allow_unchanged and text == "unchanged":
        return None
    if text not in _PROPAGATIONS:
        raise err(errno.EINVAL, text)
    return text


def _with_atime(flags: frozenset[str], old: frozenset[str]) -> frozenset[str]:
    """Keep the old atime mode when none is given (``MS_REMOUNT`` rule), relatime by default."""
    if flags & _ATIME:
        return flags - {"strictatime"}
    kept = old & _ATIME
    return flags | (kept if old else frozenset({"relatime"}))
