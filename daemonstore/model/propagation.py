"""The propagation engine: clone, copy, attach, propagate, change type and umount.

Each method mirrors one kernel function (fs/namespace.c, fs/pnode.c, Linux 6.18) and cites the
rule of docs/propagation.md it implements. Paths never appear here: callers resolve them.
"""

from __future__ import annotations

import errno
from itertools import count

from daemonstore.model.fs import Dentry, Filesystem, err, is_subdir
from daemonstore.model.mounts import (
    IdAllocator,
    Mount,
    Namespace,
    PeerGroup,
    group_key,
    preorder,
    ring_from,
)

# copy flags (fs/pnode.h)
CL_SLAVE = 0x02
CL_COPY_UNBINDABLE = 0x04
CL_MAKE_SHARED = 0x08
CL_PRIVATE = 0x10
CL_COPY_MNT_NS_FILE = 0x40


class MountTable:
    """All mounts of one model world: the mount hash, id allocators and the algorithms."""

    def __init__(self) -> None:
        # (parent, mountpoint dentry) -> the one child attached there (§1.1 invariant 4)
        self.hash: dict[tuple[Mount, Dentry], Mount] = {}
        # the same entries indexed by the mountpoint dentry, parent -> child in hash order
        # (``struct mountpoint``'s m_list): rmdir/unlink find the mounts on a dentry in time
        # proportional to those mounts, not to the world
        self.mountpoints: dict[Dentry, dict[Mount, Mount]] = {}
        self.mount_ids = IdAllocator(start=1)
        self.group_ids = IdAllocator(start=1)
        self._seq = count()
        self._minors = count(40)
        # mounts whose group id attach_recursive_mnt() invented but has not yet marked shared:
        # IS_MNT_SHARED() is false for them while propagate_mnt() runs (FZ01-FZ03)
        self._pending: set[Mount] = set()
        # detached mounts kept alive by files held open on them (model/busy.py)
        self.zombies: set[Mount] = set()

    def is_shared(self, m: Mount) -> bool:
        """``IS_MNT_SHARED()``: in a peer group, and not just given an id by this attach."""
        return m.group is not None and m not in self._pending

    # ---- construction --------------------------------------------------------------------------
    def new_fs(self, fstype: str, source: str, data: str = "") -> Filesystem:
        return Filesystem(fstype, source, next(self._minors), data)

    def new_mount(self, fs: Filesystem, root: Dentry, flags: frozenset[str]) -> Mount:
        return Mount(self.mount_ids.alloc(), next(self._seq), fs, root, flags)

    def free_mount(self, m: Mount) -> None:
        """The namespace's reference is gone; the last reference frees the id (``mntput()``
        -> ``cleanup_mnt()`` -> ``mnt_free_id()``): a held mount lives on, detached."""
        if m.held:
            self.zombies.add(m)
        else:
            self.mount_ids.release(m.id)

    def new_group(self, first: Mount) -> PeerGroup:
        g = PeerGroup(self.group_ids.alloc())
        g.members.append(first)
        first.group = g
        return g

    def overmount(self, m: Mount) -> Mount | None:
        """The mount on ``m``'s root dentry, if any (``mnt->overmount``)."""
        return self.hash.get((m, m.root))

    def mounts_on(self, d: Dentry) -> list[Mount]:
        """Every mount attached on dentry ``d``, in any parent (``d_mountpoint()``)."""
        return list(self.mountpoints.get(d, {}).values())

    def top_of_stack(self, m: Mount, d: Dentry) -> tuple[Mount, Dentry]:
        """Follow mounts at (m, d) to the topmost one (``do_lock_mount()``, §2.0)."""
        while (m, d) in self.hash:
            m = self.hash[(m, d)]
            d = m.root
        return m, d

    # ---- tree surgery --------------------------------------------------------------------------
    def _hash_add(self, child: Mount, parent: Mount, mp: Dentry) -> None:
        child.parent = parent
        child.mountpoint = mp
        self.hash[(parent, mp)] = child
        on = self.mountpoints.get(mp)
        if on is None:
            on = self.mountpoints[mp] = {}
        on[parent] = child
        parent.children.append(child)

    def _hash_del(self, child: Mount, hidden: bool = False) -> None:
        """Detach ``child`` from its parent; ``hidden``: it is known to be off the parent's
        children already (umount_tree hid it), so the list is not scanned for it again."""
        parent, mp = child.parent, child.mountpoint
        if parent is None or mp is None:
            return
        if self.hash.get((parent, mp)) is child:
            del self.hash[(parent, mp)]
            on = self.mountpoints[mp]
            del on[parent]
            if not on:
                del self.mountpoints[mp]
        if not hidden and child in parent.children:
            parent.children.remove(child)
        child.parent = None
        child.mountpoint = None

    def change_mountpoint(self, m: Mount, parent: Mount, mp: Dentry) -> None:
        """``mnt_change_mountpoint()``: re-attach ``m`` at (parent, mp)."""
        self._hash_del(m)
        self._hash_add(m, parent, mp)

    def set_ns(self, m: Mount, ns: Namespace) -> None:
        if not m.children:  # the common case: a single mount (hot path of propagation)
            if m.ns is not None and m.ns is not ns:
                m.ns.mounts.discard(m)
            m.ns = ns
            ns.mounts.add(m)
            return
        for p in preorder(m):
            if p.ns is not None and p.ns is not ns:
                p.ns.mounts.discard(p)
            p.ns = ns
            ns.mounts.add(p)

    # ---- cloning (§2.4, clone_mnt / copy_tree) -------------------------------------------------
    def clone(self, old: Mount, root: Dentry, flag: int) -> Mount:
        """``clone_mnt()``: a copy of ``old`` rooted at ``root`` with the copy type of ``flag``."""
        m = self.new_mount(old.fs, root, old.flags)
        if flag & CL_SLAVE:
            m.master = old
            old.slaves[m] = None
        elif not flag & CL_PRIVATE:
            if old.group is not None and (flag & CL_MAKE_SHARED or self.is_shared(old)):
                ring = old.group.members
                ring.insert(ring.index(old) + 1, m)  # a new peer goes right after its original
                m.group = old.group
            if old.master is not None:
                m.master = old.master
                old.master.slaves[m] = None
        # unbindable is never copied: it lives in mnt_t_flags on 6.17+ (§6 item 1)
        if flag & CL_MAKE_SHARED and m.group is None:
            self.new_group(m)
        return m

    def copy_tree(self, src: Mount, dentry: Dentry, flag: int) -> Mount:
        """``copy_tree()``: clone ``src`` at ``dentry`` and every submount below that dentry.

        Unbindable submounts are pruned with their subtree unless ``CL_COPY_UNBINDABLE``
        (§2.4, SC12); only submounts whose mountpoint lies under ``dentry`` are taken (SC14).
        """
        if not flag & CL_COPY_UNBINDABLE and src.unbindable:
            raise err(errno.EINVAL)
        res = self.clone(src, dentry, flag)
        if not src.children:  # hot path: propagating a single mount
            return res
        copies = {src: res}
        skip = not flag & CL_COPY_UNBINDABLE
        skip_ns = not flag & CL_COPY_MNT_NS_FILE  # only binds copy bound namespace files
        for child in list(src.children):
            if child.mountpoint is None or not is_subdir(child.mountpoint, dentry):
                continue
            for s in preorder(child, skip_unbindable=skip, skip_ns_files=skip_ns):
                assert s.parent is not None and s.mountpoint is not None
                q = self.clone(s, s.root, flag)
                self._hash_add(q, copies[s.parent], s.mountpoint)
                copies[s] = q
        return res

    # ---- change of type (§2.2) -----------------------------------------------------------------
    def invent_group_ids(self, mounts: list[Mount]) -> None:
        for p in mounts:
            if p.group is None:
                self.new_group(p)

    def change_propagation(self, m: Mount, ptype: str) -> None:
        """``change_mnt_propagation()`` (fs/pnode.c), the state table of §2.2."""
        if ptype == "shared":
            # set_mnt_shared(): the group was invented by the caller; clears unbindable
            m.unbindable = False
            return
        new_master = m.master
        if m.group is not None:
            ring = m.group.members
            if len(ring) == 1:
                self.group_ids.release(m.group.id)
            else:
                i = ring.index(m)
                new_master = ring[(i + 1) % len(ring)]  # next_peer()
                del ring[i]
            m.group = None
            self._transfer_slaves(m, new_master)
        if m.master is not None:
            del m.master.slaves[m]
        if ptype == "slave":
            m.master = new_master
            if new_master is not None:
                new_master.slaves[m] = None
        else:
            m.master = None
            m.unbindable = ptype == "unbindable"

    @staticmethod
    def _transfer_slaves(m: Mount, to: Mount | None) -> None:
        """``transfer_propagation()``: hand ``m``'s slaves to ``to`` (or free them)."""
        for s in m.slaves:
            s.master = to
            if to is not None:
                to.slaves[s] = None
        m.slaves = {}

    # ---- propagation of a new tree (§3.1, §3.2) -------------------------------------------------
    def walk_groups(self, origin: Mount) -> list[list[Mount]]:
        """Peer groups reachable from ``origin`` depth first (``next_group()``), origin first.

        Each group is listed in ring order from the member it was entered by. Mounts made by
        the running operation (``ns is None``) are never descended into.
        """
        out: list[list[Mount]] = []
        seen: set[object] = set()
        stack = [origin]
        while stack:
            entry = stack.pop()
            group = entry.group
            key = entry if group is None else group
            if key in seen:
                continue
            seen.add(key)
            if group is None:  # a slave-only mount is a group of one (the common receiver)
                out.append([entry])
                if entry.slaves and entry.ns is not None:
                    stack.extend(reversed(entry.slaves))
                continue
            members = ring_from(entry)
            out.append(members)
            nxt = [s for mem in members if mem.ns is not None for s in mem.slaves]
            stack.extend(reversed(nxt))
        return out

    def receivers(self, origin: Mount) -> list[Mount]:
        """Every mount that receives propagation from ``origin`` (``propagation_next()``)."""
        out: list[Mount] = []

        def slaves_of(m: Mount) -> None:
            stack = list(reversed(m.slaves))
            while stack:
                s = stack.pop()
                out.append(s)
                stack.extend(reversed(s.slaves))

        slaves_of(origin)
        for peer in ring_from(origin)[1:]:
            out.append(peer)
            slaves_of(peer)
        return out

    def propagate_mnt(self, dest: Mount, mp: Dentry, source: Mount) -> list[Mount]:
        """``propagate_mnt()``: one copy of ``source`` per receiver of ``dest`` (§3.2).

        Returns the copies, each with parent/mountpoint recorded but not yet hashed.
        """
        copies: list[Mount] = []
        copy_for: dict[object, Mount] = {}
        dest_key = group_key(dest)
        visible: dict[Dentry, bool] = {}  # receivers mostly share a few root dentries
        for index, members in enumerate(self.walk_groups(dest)):
            if index == 0:
                copy, flag, targets = source, CL_MAKE_SHARED, members[1:]
            else:
                flag = CL_SLAVE | (CL_MAKE_SHARED if self.is_shared(members[0]) else 0)
                targets = members
            for n in targets:
                # need_secondary(): not a new copy, mountpoint visible, not a detached tree
                if n.ns is None or n.ns.anon:
                    continue
                seen = visible.get(n.root)
                if seen is None:
                    seen = visible[n.root] = is_subdir(mp, n.root)
                if not seen:
                    continue
                if flag & CL_SLAVE:  # first copy in this group: slave of the upstream copy
                    copy = self._find_master(n, copy_for, dest_key, source)
                this = self.copy_tree(copy, copy.root, flag)
                this.parent, this.mountpoint = n, mp
                copy_for[group_key(n)] = this
                copies.append(this)
                copy, flag = this, CL_MAKE_SHARED
        return copies

    @staticmethod
    def _find_master(n: Mount, copy_for: dict[object, Mount], dest_key: object,
                     source: Mount) -> Mount:
        """``find_master()``: the copy made for the nearest upstream group that got one.

        Groups skipped because they could not see the mountpoint are bypassed (SC43).
        """
        m = n.master
        while m is not None:
            key = group_key(m)
            if key is dest_key:
                return source
            if key in copy_for:
                return copy_for[key]
            m = m.master
        raise AssertionError("receiver not below the destination's group")

    def attach_recursive(self, source: Mount, dest: Mount, mp: Dentry, moving: bool) -> None:
        """``attach_recursive_mnt()`` (§2.5): propagate, mark shared, attach, tuck (§3.3)."""
        copies: list[Mount] = []
        if dest.shared:
            tree = list(preorder(source))
            self._pending = {p for p in tree if p.group is None}
            self.invent_group_ids(tree)
            try:
                copies = self.propagate_mnt(dest, mp, source)
            finally:
                self._pending = set()
            for p in tree:
                p.unbindable = False  # set_mnt_shared()
        if moving:
            self._hash_del(source)
        source.parent, source.mountpoint = dest, mp
        for child in [source, *copies]:
            parent, where = child.parent, child.mountpoint
            assert parent is not None and where is not None and parent.ns is not None
            q = self.hash.get((parent, where))
            if q is not None:
                self._hash_del(q)
            self._hash_add(child, parent, where)
            self.set_ns(child, parent.ns)
            if q is not None:
                # tuck the new copy beneath the existing mount (§3.3, SC29)
                r = child
                while (top := self.overmount(r)) is not None:
                    r = top
                self._hash_add(q, r, r.root)

    # ---- umount (§2.7, §3.4) -------------------------------------------------------------------
    def umount_tree(self, m: Mount, propagate: bool = True) -> list[Mount]:
        """``umount_tree()``: remove ``m``'s subtree and, with ``propagate``, its cognates."""
        victims = list(preorder(m))
        doomed = set(victims)  # MNT_UMOUNT
        for p in victims:  # "hide the mounts from mnt_mounts"
            if p.parent is not None and p in p.parent.children:
                p.parent.children.remove(p)
        if propagate:
            victims += self._propagate_umount(victims, doomed)
        for p in victims:
            if p.ns is not None:
                p.ns.mounts.discard(p)
                p.ns = None
        for p in victims:
            # every victim was taken off its parent's children above (or by umount_one), and
            # nothing puts one back: no need to scan the siblings for it once per victim
            self._hash_del(p, hidden=True)
            self.change_propagation(p, "private")
        for p in victims:
            self.free_mount(p)
        return victims

    def _propagate_umount(self, victims: list[Mount], doomed: set[Mount]) -> list[Mount]:
        """``propagate_umount()`` (6.17+; propagate_umount.txt): the cognates that may go."""
        return _UmountPropagation(self, doomed).run(victims)



class _UmountPropagation:
    """One ``propagate_umount()`` pass (fs/pnode.c, 6.17+; Documentation/filesystems/
    propagate_umount.txt): gather the candidates, trim the set until it is non-shifting, take out
    what is left, then reparent the overmounts that survive. One method per kernel function."""

    def __init__(self, table: MountTable, doomed: set[Mount]) -> None:
        self.table = table
        self.doomed = doomed
        self.cand: set[Mount] = set()  # T_UMOUNT_CANDIDATE
        self.candidates: list[Mount] = []  # the candidate list, in the kernel's order
        self.on_list: set[Mount] = set()
        self.marked: set[Mount] = set()
        self.to_umount: list[Mount] = []

    def run(self, victims: list[Mount]) -> list[Mount]:
        self.gather_candidates(victims)
        for m in self.candidates:
            if m in self.on_list:
                self.trim_one(m)
        for m in self.candidates:
            if m in self.on_list:
                self.handle_locked(m)
        for m in self.to_umount:
            self.reparent(m)
        return self.to_umount

    def gather_candidates(self, victims: list[Mount]) -> None:
        """``gather_candidates()``: every cognate of a victim, in each receiver of its parent."""
        found_order: list[Mount] = []
        for m in victims:
            if m in self.cand:
                continue
            self.cand.add(m)
            assert m.parent is not None and m.mountpoint is not None
            for q in self.table.receivers(m.parent):
                child = self.table.hash.get((q, m.mountpoint))
                if child is None or child in self.cand:
                    continue
                self.cand.add(child)
                if child not in self.doomed:
                    found_order.append(child)
        for m in victims:
            self.cand.discard(m)
        self.candidates = list(reversed(found_order))  # list_add() puts each at the head
        self.on_list = set(self.candidates)

    def umount_one(self, m: Mount) -> None:
        self.doomed.add(m)
        if m.parent is not None and m in m.parent.children:
            m.parent.children.remove(m)
        self.to_umount.append(m)

    def drop(self, m: Mount) -> None:
        """Take ``m`` off the candidate list and out of the set."""
        self.cand.discard(m)
        self.on_list.discard(m)

    def trim_ancestors(self, m: Mount) -> None:
        """``trim_ancestors()``: a kept mount keeps its candidate ancestors, except where it is
        their overmount."""
        p = m.parent
        while p is not None and p in self.cand:
            if m in self.marked:
                return
            self.marked.add(m)
            if m is not self.table.overmount(p):
                self.cand.discard(p)  # left on the list; handle_locked() drops it
            m, p = p, p.parent

    def trim_one(self, m: Mount) -> None:
        """``trim_one()``: a candidate with a child that is not a candidate (other than its
        overmount) stays; a childless candidate goes at once."""
        if m not in self.cand:
            self.drop(m)
            return
        found = remove_this = False
        over = self.table.overmount(m) if m.children else None
        for n in m.children:
            if n not in self.cand:
                found = True
                if n is not over:
                    remove_this = True
                    break
        if found:
            self.trim_ancestors(m)
            if remove_this:
                self.drop(m)
        elif not m.children:
            self.drop(m)
            self.umount_one(m)

    def handle_locked(self, m: Mount) -> None:
        """``handle_locked()``: nothing is MNT_LOCKED in the model, so every remaining candidate
        goes, with its candidate ancestors."""
        if m not in self.cand:
            self.drop(m)
            return
        up: Mount | None = m
        while up is not None and up in self.cand:
            self.drop(up)
            self.umount_one(up)
            up = up.parent

    def reparent(self, m: Mount) -> None:
        """``reparent()``: an overmount of a doomed mount that survives slides down to where
        the bottom of the doomed stack was attached (SC30, SC39)."""
        over = self.table.overmount(m)
        if over is None or over in self.doomed:
            return
        p: Mount = over
        while True:
            mp, parent = p.mountpoint, p.parent
            assert mp is not None and parent is not None
            p = parent
            if p not in self.doomed:
                break
        self.table.change_mountpoint(over, p, mp)
