"""The mount tree of one mountinfo read (tier 0, pure: parses text it is given), and the one
rule for "which mount is at this path".

Questions such as "is this store mounted, by itself, shared?" are answered from
``host.mountinfo()`` read once per run, never by probing paths (design guidance;
docs/chromeos.md §1: the original never checks).

**The top of the stack at a path** is the mount a path lookup lands on: :meth:`MountView.top`.
It walks from the root mount one component at a time, always onto the top of the stack at each
mount point, as the kernel's lookup does (``__lookup_mnt()`` on (parent mount, mountpoint),
fs/namespace.c; ``traverse_mounts()``, fs/namei.c). The last mountinfo line at that mount
point is not the same answer, for two reasons:

* mountinfo lists mounts in the order they were made, and that is not the stacking order: a
  copy that propagation brings to a mountpoint where a mount already sits is tucked *beneath*
  it (``attach_recursive_mnt()``, Linux >= 4.11; scenario SC29), so the newest line at the
  path is a mount hidden under another at the same path;
* a mount whose parent was overmounted later (an old ``/run/daemon-store/<d>`` below a tmpfs
  mounted on ``/run/daemon-store``) keeps its line, but no lookup reaches it.

"Is anything mounted at this path, seen or hidden?" is a different question (sign-in refuses
such a path, sign-out unmounts every such mount): callers ask it of the entries directly.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from daemonstore import mountinfo
from daemonstore.host import Host

__all__ = ["MountView", "MountViewOnDemand", "describe_mount", "show_path"]


def show_path(path: str) -> str:
    """A path for a one-line message: as is, or repr() if it holds control characters (a
    template name may contain a newline)."""
    return path if path.isprintable() else repr(path)


class MountView:
    """One read of mountinfo, indexed for the questions boot, sign-in, repair and the reports
    ask (built once per run)."""

    def __init__(self, entries: Sequence[mountinfo.MountInfoEntry]) -> None:
        self.entries = list(entries)
        self.by_id = {e.mount_id: e for e in self.entries}
        # (parent mount id, mount point) -> the child mounted there; in creation order, so at a
        # (never expected) tie the later mount wins, as it would sit on top
        self._at = {(e.parent_id, e.mount_point): e for e in self.entries
                    if e.parent_id != e.mount_id}
        roots = [e for e in self.entries if e.mount_point == "/" and e.parent_id not in self.by_id]
        self._root = roots[0] if roots else None
        #: canonical path -> the mount a walk is on after crossing every mount at that path
        #: (the walk of :meth:`stack`; shared by every path below it)
        self._reached: dict[str, mountinfo.MountInfoEntry] = {}

    @classmethod
    def from_host(cls, host: Host) -> MountView:
        return cls(mountinfo.parse(host.mountinfo()))

    def stack(self, path: str) -> list[mountinfo.MountInfoEntry]:
        """The mounts a path lookup of ``path`` crosses *at* ``path``, bottom first ([] if
        ``path`` is not a mount point in the visible tree).

        Walks from the root mount the way the kernel's path walk does, one component at a time,
        always onto the top of the stack at each mount point: a mount hidden under an
        overmounted parent (e.g. an old ``/run/daemon-store/<d>`` below a tmpfs later mounted
        on ``/run/daemon-store``) has the covered mount as parent and is never reached.
        """
        root = self._root
        if root is None:
            return []
        parts = [p for p in path.split("/") if p]
        if not parts:  # "/" itself (or "//"): the root mount and what is stacked on it
            stack = [root] if path == "/" else []
            cur, last = root, "/"
        else:
            last = "/" + "/".join(parts)
            cur = self._reach(last.rpartition("/")[0] or "/")
            stack = []
        while (nxt := self._at.get((cur.mount_id, last))) is not None:
            cur = nxt
            if last == path:
                stack.append(cur)
        return stack

    def _reach(self, prefix: str) -> mountinfo.MountInfoEntry:
        """The mount the walk of :meth:`stack` is on after crossing every mount at the
        canonical path ``prefix`` (each mount point's top, from the root down), memoized."""
        cur = self._reached.get(prefix)
        if cur is None:
            if prefix == "/":
                cur = self._root
                assert cur is not None  # stack() returned before the walk without a root
            else:
                cur = self._reach(prefix.rpartition("/")[0] or "/")
            while (nxt := self._at.get((cur.mount_id, prefix))) is not None:
                cur = nxt
            self._reached[prefix] = cur
        return cur

    def top(self, path: str) -> mountinfo.MountInfoEntry | None:
        """The mount a lookup of ``path`` lands on, the top of :meth:`stack` (None if ``path``
        is not a mount point in the visible tree): the one top-of-stack rule (module doc)."""
        stack = self.stack(path)
        return stack[-1] if stack else None

    def is_self_bind(self, entry: mountinfo.MountInfoEntry) -> bool:
        """Is ``entry`` the directory at its mount point bound onto itself? Same device as the
        mount below, and its root is the mount point's path inside that mount's filesystem."""
        parent = self.by_id.get(entry.parent_id)
        if parent is None:  # parent outside the sandbox view: compare with the sandbox path
            return entry.root == entry.mount_point
        rel = posixpath.relpath(entry.mount_point, parent.mount_point)
        want = posixpath.normpath(posixpath.join(parent.root, rel))
        return entry.dev == parent.dev and entry.root == want

    def store_problem(self, path: str) -> str | None:
        """None if ``path`` is a ready store mount (one shared self-bind), else what is wrong."""
        stack = self.stack(path)
        if not stack:
            return "not a mount point"
        if len(stack) > 1:
            shown = "; ".join(describe_mount(e) for e in stack)
            return f"{len(stack)} mounts are stacked on it ({shown})"
        if not self.is_self_bind(stack[0]):
            return f"another mount covers it ({describe_mount(stack[0])})"
        if stack[0].shared is None:
            return f"its mount is {stack[0].propagation}, not shared"
        return None


class MountViewOnDemand(MountView):
    """A MountView of ``host`` that reads mountinfo the first time it is asked anything, and
    never if nothing is asked: startup at boot, where every store is missing and there is no
    orphan, needs no mount table (bench/boot.py, issue 14 item 6). Still one read per run."""

    def __init__(self, host: Host) -> None:  # the read is MountView.__init__, on first use
        self._host = host

    def __getattr__(self, name: str) -> Any:
        # called only for an attribute not set yet: every MountView attribute before the read
        host = self.__dict__.pop("_host", None)
        if host is None:
            raise AttributeError(name)
        MountView.__init__(self, mountinfo.parse(host.mountinfo()))
        return getattr(self, name)


def describe_mount(e: mountinfo.MountInfoEntry) -> str:
    return f"{e.fstype} {show_path(e.source)} root {show_path(e.root)} ({e.propagation})"
