"""Detached trees and bound namespace files in the model (docs/propagation.md §2.9, §1.2).

``clone_detached`` is ``open_tree(OPEN_TREE_CLONE[|AT_RECURSIVE])``: a bind made now and held in
an anonymous namespace (which never receives propagation) until ``attach_detached`` puts it in
place with ``move_mount`` semantics. The jail uses it to pin bind sources before a tmpfs covers
them. ``pin_namespace`` is ``mount --bind /proc/PID/ns/mnt PATH`` (how session_manager keeps
``/run/namespaces/mnt_chrome``); ``open_pinned_namespace`` is ``open(PATH)`` for a later setns.
"""

from __future__ import annotations

import errno
from itertools import count

from daemonstore.model.fs import FILE, Dentry, err
from daemonstore.model.mounts import Mount, Namespace, preorder
from daemonstore.model.propagation import CL_COPY_MNT_NS_FILE, MountTable
from daemonstore.model.watchers import changes_mounts

_handles = count(1)


class TreeOps:
    """Mixin for ModelHost."""

    table: MountTable
    ns: Namespace
    _namespaces: dict[str, Namespace]
    _detached: dict[str, Namespace]
    _pinned: dict[int, Namespace]  # id(nsfs filesystem) -> the namespace it pins

    def resolve(self, path: str, *, follow: bool = True, safe: bool = False,
                _depth: int = 0) -> tuple[Mount, Dentry]:
        raise NotImplementedError

    def _mount_target(self, target: str, safe: bool) -> tuple[Mount, Dentry]:
        raise NotImplementedError

    def clone_detached(self, source: str, *, recursive: bool = False, safe: bool = False) -> str:
        """``open_tree(OPEN_TREE_CLONE)``: returns a handle for :meth:`attach_detached`."""
        old, dentry = self.resolve(source, safe=safe)
        if old.unbindable:
            raise err(errno.EINVAL, source)
        if recursive:
            tree = self.table.copy_tree(old, dentry, CL_COPY_MNT_NS_FILE)
        else:
            tree = self.table.clone(old, dentry, 0)
        anon = Namespace(f"@{next(_handles)}", tree, host_parent_id=0, anon=True)
        self.table.set_ns(tree, anon)
        self._detached[anon.name] = anon
        return anon.name

    @changes_mounts
    def attach_detached(self, handle: str, target: str, *, safe: bool = False) -> None:
        """``move_mount(F_EMPTY_PATH)`` of a detached tree: attached like a bind (§2.9)."""
        anon = self._detached.get(handle)
        if anon is None:
            raise err(errno.EBADF, handle)
        dest, mp = self._mount_target(target, safe)
        tree = anon.root
        if mp.is_dir != tree.root.is_dir:
            raise err(errno.EINVAL, target)
        if dest.shared and any(p.unbindable for p in preorder(tree)):
            raise err(errno.EINVAL, target)
        del self._detached[handle]
        self.table.attach_recursive(tree, dest, mp, moving=False)

    def drop_detached(self, handle: str) -> None:
        """Close a detached tree that was never attached (the last fd dissolves it)."""
        anon = self._detached.pop(handle, None)
        if anon is not None:
            self.table.umount_tree(anon.root, propagate=False)

    @changes_mounts
    def pin_namespace(self, name: str, path: str) -> None:
        """Bind namespace ``name``'s ns file onto the existing regular file ``path``."""
        ns = self._namespaces.get(name)
        if ns is None:
            raise err(errno.ENOENT, name)
        if self.ns.seq >= ns.seq:
            raise err(errno.EINVAL, path)  # mnt_ns_loop(): only a newer ns may be pinned
        dest, mp = self._mount_target(path, safe=False)
        if mp.kind != FILE:
            raise err(errno.ENOTDIR if mp.is_dir else errno.EINVAL, path)
        fs = self.table.new_fs("nsfs", "nsfs")
        fs.root.kind = FILE
        fs.root.mode = 0o444
        fs.root.name = f"mnt:[{4026531840 + ns.seq}]"
        m = self.table.new_mount(fs, fs.root, frozenset({"relatime"}))
        self._pinned[id(fs)] = ns
        self.table.attach_recursive(m, dest, mp, moving=False)

    def open_pinned_namespace(self, path: str, name: str) -> None:
        """Register the namespace whose file is bound at ``path`` under ``name``."""
        m, d = self.resolve(path)
        ns = self._pinned.get(id(m.fs)) if d is m.root else None
        if ns is None or ns.root.ns is not ns:
            raise err(errno.EINVAL, path)  # not a (live) mount namespace file
        if name in self._namespaces and self._namespaces[name] is not ns:
            raise err(errno.EEXIST, name)
        self._namespaces[name] = ns
