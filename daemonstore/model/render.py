"""Render a model namespace as ``/proc/PID/mountinfo`` text (docs/propagation.md §4)."""

from __future__ import annotations

from daemonstore.model.fs import path_in_fs, relative_path
from daemonstore.model.mounts import Mount, Namespace
from daemonstore.mountinfo import MountInfoEntry, render

# per-mount options in show_mnt_opts() order after rw/ro
_OPT_ORDER = ("nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "nosymfollow")


def mount_path(m: Mount, ns: Namespace) -> str:
    """Mount point of ``m`` relative to the sandbox root (mountinfo field 5)."""
    parts: list[str] = []
    cur = m
    while cur is not ns.root:
        parent, mp = cur.parent, cur.mountpoint
        if parent is None or mp is None:
            break
        rel = relative_path(mp, parent.root)
        if rel:
            parts.append(rel)
        cur = parent
    return "/" + "/".join(reversed(parts))


def _root_field(m: Mount) -> str:
    if m.fs.fstype == "nsfs":
        return m.root.name  # nsfs shows "mnt:[INODE]" (its d_dname), not a path
    path = path_in_fs(m.root)
    return path + "//deleted" if m.root.deleted else path


def _dominating_id(m: Mount, ns: Namespace) -> int | None:
    """``get_dominating_id()``: nearest master group with a member in the reader's namespace."""
    cur = m.master
    while cur is not None:
        group = cur.group
        members = group.members if group is not None else [cur]
        if any(p.ns is ns for p in members):
            return group.id if group is not None else None
        cur = cur.master
    return None


def entry(m: Mount, ns: Namespace) -> MountInfoEntry:
    flags = m.flags
    opts = ["ro" if "ro" in flags else "rw"] + [o for o in _OPT_ORDER if o in flags]
    master = m.master.group.id if m.master is not None and m.master.group else None
    prop_from = None
    if master is not None:
        dom = _dominating_id(m, ns)
        if dom is not None and dom != master:
            prop_from = dom
    parent_id = m.parent.id if m.parent is not None else ns.host_parent_id
    return MountInfoEntry(
        mount_id=m.id, parent_id=parent_id, dev=f"0:{m.fs.minor}", root=_root_field(m),
        mount_point=mount_path(m, ns), options=tuple(opts),
        shared=m.group.id if m.group is not None else None, master=master,
        propagate_from=prop_from, unbindable=m.unbindable, fstype=m.fs.fstype,
        source=m.fs.source, super_options=m.fs.super_options)


def render_namespace(ns: Namespace) -> str:
    """Lines in creation order, as 6.8+ kernels list them (§3.5)."""
    return render(entry(m, ns) for m in sorted(ns.mounts, key=lambda x: x.seq))
