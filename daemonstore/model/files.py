"""File operations of the model, resolved through mounts (a write through a bind mount lands in
the source's filesystem, because both mounts share the same dentries).

Errnos follow the syscalls a Python program would use: mkdir(2), fchownat(2), fchmodat(2),
open(2) with ``O_NONBLOCK`` (so a fifo never blocks), symlink(2), readlink(2), unlink(2),
rmdir(2). Mounts flagged ``ro`` give EROFS.
"""

from __future__ import annotations

import errno
import posixpath

from daemonstore.host import Stat
from daemonstore.model.fs import DIR, FIFO, FILE, SYMLINK, Dentry, err
from daemonstore.model.mounts import Mount, Namespace
from daemonstore.model.propagation import MountTable
from daemonstore.model.resolve import MAXSYMLINKS


class FileOps:
    """Mixin for ModelHost (needs ``resolve``, ``resolve_parent``, ``table`` and ``ns``)."""

    table: MountTable
    ns: Namespace

    def resolve(self, path: str, *, follow: bool = True, safe: bool = False,
                _depth: int = 0) -> tuple[Mount, Dentry]:
        raise NotImplementedError

    def resolve_parent(self, path: str, *, safe: bool = False) -> tuple[Mount, Dentry, str]:
        raise NotImplementedError

    def lstat(self, path: str, *, safe: bool = False) -> Stat:
        raise NotImplementedError

    @staticmethod
    def _writable(m: Mount, path: str) -> None:
        if "ro" in m.flags:
            raise err(errno.EROFS, path)

    def _create(self, path: str, kind: str, mode: int, safe: bool) -> Dentry:
        m, d, name = self.resolve_parent(path, safe=safe)
        if name in d.children:
            raise err(errno.EEXIST, path)
        self._writable(m, path)
        child = Dentry(d.fs, name, d, kind, mode)
        d.children[name] = child
        return child

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
              safe: bool = False) -> None:
        if not parents:
            self._create(path, DIR, mode, safe)
            return
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts)):
            sub = "/" + "/".join(parts[: i + 1])
            try:
                self._create(sub, DIR, mode, safe)
            except OSError as exc:
                if exc.errno != errno.EEXIST or not self.resolve(sub, safe=safe)[1].is_dir:
                    raise

    def mkfifo(self, path: str, mode: int = 0o644) -> None:
        self._create(path, FIFO, mode, safe=False)

    def symlink(self, target: str, path: str) -> None:
        self._create(path, SYMLINK, 0o777, safe=False).target = target

    def readlink(self, path: str) -> str:
        d = self.resolve(path, follow=False)[1]
        if d.kind != SYMLINK:
            raise err(errno.EINVAL, path)
        return d.target

    @staticmethod
    def _refuse_aliases(d: Dentry, path: str, safe: bool) -> None:
        """``safe`` chown/chmod change only a directory, a symlink or a regular file (KernelHost
        also refuses hard links and device nodes, which the model cannot have): EPERM for a
        fifo, as for anything that is never a store directory (SECURITY.md, "Ownership rule")."""
        if safe and d.kind == FIFO:
            raise OSError(errno.EPERM, "a device node, fifo or socket: ownership and mode are "
                          "never changed through safe access", path)

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None:
        m, d = self.resolve(path, follow=follow_symlinks, safe=safe)
        self._refuse_aliases(d, path, safe)
        self._writable(m, path)
        if uid != -1:
            d.uid = uid
        if gid != -1:
            d.gid = gid
        if d.kind == FILE:  # chown clears setuid, and setgid when group-executable
            d.mode &= ~0o4000
            if d.mode & 0o010:
                d.mode &= ~0o2000

    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None:
        m, d = self.resolve(path, follow=follow_symlinks, safe=safe)
        if d.kind == SYMLINK:
            raise err(errno.EOPNOTSUPP, path)  # Linux has no lchmod
        self._refuse_aliases(d, path, safe)
        self._writable(m, path)
        d.mode = mode & 0o7777

    def read_file(self, path: str, *, safe: bool = False) -> bytes:
        d = self.resolve(path, safe=safe)[1]
        if d.kind == DIR:
            raise err(errno.EISDIR, path)
        return d.data if d.kind == FILE else b""

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644, append: bool = False,
                   safe: bool = False, _depth: int = 0) -> None:
        m, d, name = self.resolve_parent(path, safe=safe)
        child = d.children.get(name)
        if child is not None and child.kind == SYMLINK:
            if safe or "nosymfollow" in m.flags or _depth >= MAXSYMLINKS:
                raise err(errno.ELOOP, path)
            target = child.target
            nxt = target if target.startswith("/") else posixpath.join(
                posixpath.dirname(path.rstrip("/")) or "/", target)
            self.write_file(nxt, data, mode=mode, append=append, _depth=_depth + 1)
            return
        if child is None:
            self._writable(m, path)
            child = Dentry(d.fs, name, d, FILE, mode)
            d.children[name] = child
        elif child.kind == DIR:
            raise err(errno.EISDIR, path)
        elif child.kind == FIFO:
            raise err(errno.ENXIO, path)  # O_WRONLY|O_NONBLOCK on a fifo without a reader
        else:
            # an existing file may be covered by a file bind mount: write where it resolves
            m, child = self.table.top_of_stack(m, child)
            self._writable(m, path)
        child.data = (child.data + data) if append else bytes(data)

    def listdir(self, path: str, *, safe: bool = False) -> list[str]:
        d = self.resolve(path, safe=safe)[1]
        if not d.is_dir:
            raise err(errno.ENOTDIR, path)
        return sorted(d.children)

    def _remove(self, path: str, want_dir: bool, safe: bool) -> None:
        m, d, name = self.resolve_parent(path, safe=safe)
        child = d.children.get(name)
        if child is None:
            raise err(errno.ENOENT, path)
        if want_dir and child.kind != DIR:
            raise err(errno.ENOTDIR, path)
        if not want_dir and child.kind == DIR:
            raise err(errno.EISDIR, path)
        on = self.table.mounts_on(child)
        if any(x.ns is self.ns for x in on):
            raise err(errno.EBUSY, path)  # is_local_mountpoint(), checked before emptiness
        if want_dir and child.children:
            raise err(errno.ENOTEMPTY, path)  # the filesystem's own rmdir (simple_rmdir)
        self._writable(m, path)
        for x in on:  # __detach_mounts(): other namespaces lose them, without propagation
            if x.ns is not None:
                self.table.umount_tree(x, propagate=False)
        del d.children[name]
        child.deleted = True

    def unlink(self, path: str, *, safe: bool = False) -> None:
        self._remove(path, want_dir=False, safe=safe)

    def rmdir(self, path: str, *, safe: bool = False) -> None:
        self._remove(path, want_dir=True, safe=safe)

    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except OSError:
            return False
        return True
