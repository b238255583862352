"""Mounts, peer groups and namespaces of the model (docs/propagation.md §1).

The fields follow ``struct mount`` (fs/mount.h) so that the algorithms in ``propagation.py``
can be read side by side with fs/pnode.c and fs/namespace.c.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from daemonstore.model.fs import Dentry, Filesystem


class IdAllocator:
    """Lowest-free integer ids, reused after release (``ida_alloc_min``, rule §1.1 inv. 5)."""

    __slots__ = ("_next", "_free")

    def __init__(self, start: int) -> None:
        self._next = start
        self._free: list[int] = []

    def alloc(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        self._next += 1
        return self._next - 1

    def release(self, value: int) -> None:
        heapq.heappush(self._free, value)


class PeerGroup:
    """A peer group (``mnt_group_id`` + the ``mnt_share`` ring). ``members`` is in ring order."""

    __slots__ = ("id", "members")

    def __init__(self, gid: int) -> None:
        self.id = gid
        self.members: list[Mount] = []

    def __repr__(self) -> str:
        return f"<PeerGroup {self.id} n={len(self.members)}>"


class Mount:
    """One mount: a (filesystem, root dentry) pair attached at (parent, mountpoint).

    Propagation state as in the kernel: ``group`` (None = not shared), ``master`` (a *member* of
    the master group; only the group is observable), ``slaves`` (this member's slave list) and
    ``unbindable``. ``ns`` is None while a copy is being built (``IS_MNT_NEW``) and after umount.
    """

    __slots__ = ("id", "seq", "fs", "root", "parent", "mountpoint", "ns", "children", "group",
                 "master", "slaves", "unbindable", "flags", "held")

    def __init__(self, mid: int, seq: int, fs: Filesystem, root: Dentry,
                 flags: frozenset[str]) -> None:
        self.id = mid
        self.seq = seq
        self.fs = fs
        self.root = root
        self.parent: Mount | None = None
        self.mountpoint: Dentry | None = None
        self.ns: Namespace | None = None
        self.children: list[Mount] = []
        self.group: PeerGroup | None = None
        self.master: Mount | None = None
        # an ordered set: the kernel's mnt_slave_list is a linked list, so removing a slave is
        # O(1) and keeps the order of the others
        self.slaves: dict[Mount, None] = {}
        self.unbindable = False
        self.flags = flags
        # files held open on this mount (their share of mnt_count; model/busy.py)
        self.held = 0

    @property
    def shared(self) -> bool:
        return self.group is not None

    def __repr__(self) -> str:
        return f"<Mount {self.id} {self.fs.source}>"


def group_key(m: Mount) -> object:
    """Identity of the propagation node of ``m``: its peer group, or itself if not shared."""
    return m.group if m.group is not None else m


def ring_from(m: Mount) -> list[Mount]:
    """``m`` and its peers in ring order starting at ``m`` (``next_peer`` order)."""
    if m.group is None:
        return [m]
    members = m.group.members
    i = members.index(m)
    return members[i:] + members[:i]


def preorder(m: Mount, skip_unbindable: bool = False,
             skip_ns_files: bool = False) -> Iterator[Mount]:
    """``next_mnt()`` order over a mount tree, hidden mounts included.

    With ``skip_unbindable`` an unbindable mount and its whole subtree are left out, with
    ``skip_ns_files`` a bound namespace file (``skip_mnt_tree`` in ``copy_tree``).
    """
    stack = [m]
    while stack:
        cur = stack.pop()
        if skip_unbindable and cur.unbindable:
            continue
        if skip_ns_files and cur.fs.fstype == "nsfs":
            continue
        yield cur
        stack.extend(reversed(cur.children))


class Namespace:
    """A mount namespace: its root mount and the set of mounts that belong to it."""

    __slots__ = ("name", "root", "mounts", "host_parent_id", "anon", "seq")

    _seqs = itertools.count(1)

    def __init__(self, name: str, root: Mount, host_parent_id: int, anon: bool = False) -> None:
        self.name = name
        self.root = root
        self.mounts: set[Mount] = set()
        # an anonymous namespace holds a detached tree (open_tree); it never receives propagation
        self.anon = anon
        # creation order: a namespace file may only be bound into an older namespace
        self.seq = next(Namespace._seqs)
        # mountinfo shows the sandbox root's parent as the id of a mount outside the sandbox
        self.host_parent_id = host_parent_id
