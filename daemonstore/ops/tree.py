"""The one safe tree walker, and what is built on it (plan layer: only calls the Host it is
given): :func:`expect_dir`, :func:`walk_tree` and :class:`RemoveTree` (``rm -r`` of a tree
someone else controls: nothing followed, no mount crossed). ops/files.py re-exports them;
they live here so that ops/guard.py can use them without an import cycle through RemoveDir.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from daemonstore.host import Host, Stat
from daemonstore.ops.base import Op, quote

__all__ = ["RemoveTree", "TreeItem", "TreeReader", "expect_dir", "walk_tree"]


def expect_dir(host: Host, path: str) -> Stat:
    """Raise unless ``path`` is a real directory: ``ELOOP`` for a symlink (in any component, since
    ``safe``), ``ENOTDIR`` for a file, fifo or anything else (SafeFD's ``kWrongType``). Returns
    its ``lstat``."""
    st = host.lstat(path, safe=True)
    if st.is_symlink:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    if not st.is_dir:
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    return st


# ---- the tree walker ---------------------------------------------------------------------------


class TreeReader(Protocol):
    """What :func:`walk_tree` reads: a subset of :class:`~daemonstore.host.Host`."""

    def lstat(self, path: str, *, safe: bool = False) -> Stat: ...

    def listdir(self, path: str, *, safe: bool = False) -> list[str]: ...


class TreeItem(NamedTuple):
    """One item of :func:`walk_tree`. ``kind`` is ``entry`` (not a directory), ``dir`` (after
    its contents), ``mount`` (on another mount: not entered), ``vanished`` (gone since it was
    listed) or ``error`` (lstat or listdir failed otherwise); the last two carry the ``error``
    and no ``stat``."""

    path: str
    kind: Literal["entry", "dir", "mount", "vanished", "error"]
    stat: Stat | None
    error: OSError | None = None


def _failed(path: str, exc: OSError) -> TreeItem:
    return TreeItem(path, "vanished" if exc.errno == errno.ENOENT else "error", None, exc)


def walk_tree(fs: TreeReader, top: str, mnt_id: int) -> Iterator[TreeItem]:
    """Post-order walk below ``top`` (not ``top`` itself) for deleting a tree that someone else
    controls: iterative (no recursion limit for a deep tree), ``safe`` everywhere (a symlink is
    an entry, never followed), and never entering another mount than ``mnt_id``. Listing
    ``top`` raises; every later failure is an item, so one entry's error does not stop the
    walk. A directory that could not be listed (gone, or replaced by a symlink or a file since
    its lstat) is not yielded as ``dir``: it was not emptied."""
    stack: list[tuple[str, Stat | None]] = [(top, None)]
    while stack:
        path, done = stack.pop()
        if done is not None:
            yield TreeItem(path, "dir", done)
            continue
        try:
            names = fs.listdir(path, safe=True)
        except OSError as exc:
            if path == top:
                raise
            stack.pop()  # its ("dir", stat) entry: it was not emptied
            yield _failed(path, exc)
            continue
        for name in reversed(names):
            child = f"{path.rstrip('/')}/{name}"
            try:
                st = fs.lstat(child, safe=True)
            except OSError as exc:
                yield _failed(child, exc)
                continue
            if st.mnt_id != mnt_id:
                yield TreeItem(child, "mount", st)
            elif st.is_dir:
                stack.append((child, st))
                stack.append((child, None))
            else:
                yield TreeItem(child, "entry", st)


@dataclass(frozen=True)
class RemoveTree(Op):
    """``rm -r --one-file-system P`` (``keep_top``: only what is inside P): for data that must
    not outlive a guest session (docs/chromeos.md §2.6, guest leftovers,
    CleanUpGuestDaemonDirectories). The tree is attacker-controlled, so it is walked with
    :func:`walk_tree`: nothing is followed (a symlink is removed, never its target) and no
    mount is crossed: P itself being a mount point, or a mount met below it, is ``EBUSY`` -- a
    mount there means someone's live data, which is unmounted first, not deleted through. The
    first failure stops the removal and is raised."""

    path: str
    keep_top: bool = False

    def apply(self, host: Host) -> None:
        top = expect_dir(host, self.path).mnt_id
        parent = os.path.dirname(self.path.rstrip("/")) or "/"
        if host.lstat(parent, safe=True).mnt_id != top:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), self.path)
        for item in walk_tree(host, self.path, top):
            if item.error is not None:
                raise item.error
            if item.kind == "mount":
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), item.path)
            if item.kind == "dir":
                host.rmdir(item.path, safe=True)
            else:
                host.unlink(item.path, safe=True)
        if not self.keep_top:
            host.rmdir(self.path, safe=True)

    def to_line(self) -> str:
        if self.keep_top:
            return f"find {quote(self.path)} -xdev -mindepth 1 -delete  # leftovers; the dir stays"
        return f"rm -r --one-file-system {quote(self.path)}"
