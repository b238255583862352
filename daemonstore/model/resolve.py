"""Path resolution through the model's mount tree (docs/propagation.md §2.0).

Walks component by component from the sandbox root, crossing onto the topmost mount at every
mountpoint, handling ``..`` across mount roots, and following symlinks (absolute targets from
the sandbox root, like ``RESOLVE_IN_ROOT``) unless told not to. ``safe`` forbids symlinks in
every component (``RESOLVE_NO_SYMLINKS``); a ``nosymfollow`` mount forbids following them.
"""

from __future__ import annotations

import errno
import posixpath as _posixpath  # pure string functions; the model never imports os

from daemonstore.model.fs import SYMLINK, Dentry, err
from daemonstore.model.mounts import Mount, Namespace
from daemonstore.model.propagation import MountTable

MAXSYMLINKS = 40  # fs/namei.c




class Resolver:
    """Mixin for ModelHost: turns sandbox paths into (mount, dentry) pairs."""

    table: MountTable
    ns: Namespace

    def _start(self) -> tuple[Mount, Dentry]:
        root = self.ns.root
        return root, root.root

    def _enter(self, m: Mount, d: Dentry) -> tuple[Mount, Dentry]:
        """Cross onto the topmost mount stacked at (m, d) (``traverse_mounts()``)."""
        return self.table.top_of_stack(m, d)

    def _dotdot(self, m: Mount, d: Dentry) -> tuple[Mount, Dentry]:
        root_m, root_d = self._start()
        while True:
            if m is root_m and d is root_d:
                return m, d  # ".." never leaves the root (RESOLVE_IN_ROOT / chroot)
            if d is not m.root:
                assert d.parent is not None
                return self._enter(m, d.parent)
            if m.parent is None or m.mountpoint is None:
                return m, d
            m, d = m.parent, m.mountpoint

    def resolve(self, path: str, *, follow: bool = True, safe: bool = False,
                _depth: int = 0) -> tuple[Mount, Dentry]:
        """(mount, dentry) that ``path`` names; ENOENT/ENOTDIR/ELOOP as the kernel gives."""
        if not path.startswith("/"):
            raise err(errno.EINVAL, path)
        m, d = self._start()
        pending = [c for c in reversed(path.split("/")) if c]
        links = 0
        while pending:
            name = pending.pop()
            if not d.is_dir:
                raise err(errno.ENOTDIR, path)
            if name == ".":
                continue
            if name == "..":
                m, d = self._dotdot(m, d)
                continue
            child = d.children.get(name)
            if child is None:
                raise err(errno.ENOENT, path)
            if child.kind == SYMLINK and (pending or follow):
                if safe or "nosymfollow" in m.flags:
                    raise err(errno.ELOOP, path)
                links += 1
                if links > MAXSYMLINKS:
                    raise err(errno.ELOOP, path)
                target = child.target
                if target.startswith("/"):
                    m, d = self._start()
                pending.extend(c for c in reversed(target.split("/")) if c)
                continue
            m, d = self._enter(m, child)
        return m, d

    def resolve_parent(self, path: str, *, safe: bool = False) -> tuple[Mount, Dentry, str]:
        """The directory that holds the last component of ``path``, and that component."""
        if not path.startswith("/"):
            raise err(errno.EINVAL, path)
        norm = path.rstrip("/")
        if not norm:
            raise err(errno.EEXIST, path)  # "/" itself always exists
        head, name = _posixpath.split(norm)
        m, d = self.resolve(head or "/", safe=safe)
        if not d.is_dir:
            raise err(errno.ENOTDIR, path)
        if name in (".", ".."):
            raise err(errno.EINVAL, path)
        return m, d, name
