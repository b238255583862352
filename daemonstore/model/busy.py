"""Busy mounts in the model: files held open, the references they add, and the umount rule that
reads them (fs/namespace.c ``do_umount()``, fs/pnode.c ``propagate_mount_busy()``, Linux 6.18).

The kernel counts the references to a mount (``mnt_count``, summed by ``mnt_get_count()``): one
for being attached in a namespace, one per child mount attached on it (``mnt_set_mountpoint()``:
"essentially, that's mntget"), one per open file, cwd or root on it, and during ``umount(2)`` one
for the path the caller looked up. The model keeps only the part that varies, ``Mount.held``:
the files held open on the mount (:meth:`HoldOps.hold`); the rest is known from the tree.

A mount that loses its namespace (``umount -l``, ``rmdir`` of its mountpoint in another
namespace) while a file is held on it is not freed: ``umount_tree()`` drops the namespace's
reference, the held file keeps the mount and its superblock alive (``mntput()`` frees on the
last one), so its id stays taken until the last :meth:`HoldOps.release`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from daemonstore.host import OpenFile
from daemonstore.model.fs import Dentry, err
from daemonstore.model.mounts import Mount, Namespace
from daemonstore.model.propagation import MountTable


def propagate_mount_busy(table: MountTable, m: Mount) -> bool:
    """``propagate_mount_busy(mnt, 2)``, as ``do_umount()`` asks it before a non-lazy umount.

    * ``m`` itself is busy with any child mount (``mnt_mounts`` not empty) or with more than the
      two references expected (attached, and the umount's own path): any file held on it.
    * Then every mount at ``m``'s mountpoint under a receiver of ``m``'s parent
      (``propagation_next(parent, parent)``, the copies the umount propagates to): a copy with
      children is skipped (``propagate_umount()`` leaves it in place), unless its only child is
      its overmount, which would not keep it from being pulled out and whose reference is
      expected; any other copy is busy with a file held on it (``do_refcount_check(child, 1)``).
    """
    if m.children or m.held:
        return True
    parent, mp = m.parent, m.mountpoint
    if parent is None or mp is None:  # "if (mnt == parent) return 0": a namespace root
        return False
    for receiver in table.receivers(parent):
        child = table.hash.get((receiver, mp))
        if child is None:
            continue
        if child.children and (len(child.children) != 1 or table.overmount(child) is None):
            continue
        if child.held:
            return True
    return False


@dataclass
class Hold:
    """One file held open by name: where it was opened and what it pins."""

    name: str
    namespace: str
    path: str
    mount: Mount
    dentry: Dentry


class HoldOps:
    """Mixin for ModelHost: ``hold``, ``release``, ``open_files``, ``end_holder``, ``syncfs``."""

    table: MountTable
    ns: Namespace
    _current: str
    _holds: dict[str, Hold]

    def resolve(self, path: str, *, follow: bool = True, safe: bool = False,
                _depth: int = 0) -> tuple[Mount, Dentry]:
        raise NotImplementedError

    def hold(self, name: str, path: str, *, safe: bool = False) -> None:
        """``open(P, O_RDONLY)`` kept open: one more reference on the mount P resolves onto."""
        if name in self._holds:
            raise err(errno.EEXIST, name)
        m, d = self.resolve(path, safe=safe)
        m.held += 1
        self._holds[name] = Hold(name, self._current, path, m, d)

    def release(self, name: str) -> None:
        """``close()``: the last reference to a detached mount frees it (``mntput()``)."""
        held = self._holds.pop(name, None)
        if held is None:
            raise err(errno.EBADF, name)
        m = held.mount
        m.held -= 1
        if not m.held and m in self.table.zombies:
            self.table.zombies.discard(m)
            self.table.mount_ids.release(m.id)

    def open_files(self) -> list[OpenFile]:
        """The holds, in hold order; ``attached`` False for a mount that lost its namespace."""
        return [OpenFile(h.name, h.namespace, "hold", h.path, h.mount.id,
                         attached=h.mount.ns is not None) for h in self._holds.values()]

    def end_holder(self, found: OpenFile) -> None:
        """The model's process_killer: the hold goes (``ESRCH`` if it is gone already)."""
        if found.how != "hold" or found.holder not in self._holds:
            raise err(errno.ESRCH, found.holder)
        self.release(found.holder)

    def syncfs(self, path: str, *, safe: bool = False) -> None:
        """Model data is never dirty: only PATH is checked (the errno of the kernel's open)."""
        self.resolve(path, safe=safe)
