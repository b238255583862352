"""Is a daemon store *really* mounted? (the trap in docs/chromeos.md §4.4 and §7
item 1: ``/run/daemon-store/<d>/<hash>`` survives sign-out as an empty directory, so an
existence check lets a daemon write into tmpfs, where the data is lost and visible to no user).

A store is ready only when the topmost mount at its path is the bind of that user's vault
directory: the mount's root ends with ``/<hash>/…/root/<d>`` (``/root/.cache/<d>`` for the cache;
``/root/<d>`` alone when the vault is its own filesystem, e.g. an ext4 loop image or a guest's
tmpfs). Each process asks about its own view and nothing here creates anything. The judgement is
:func:`judge` (pure: a mount id and a mountinfo text in, a :class:`StoreStatus` out); it reads
its two inputs from one of two places:

* :func:`store_status` / :func:`require_store`: through a :class:`~daemonstore.host.Host`, in
  the host's current namespace (the worlds, the demo, a daemon in a test);
* :func:`store_status_here` / :func:`require_store_here`: from the process itself, with plain
  paths, ``statx``'s mount id and ``/proc/self/mountinfo`` (a daemon on a real system; no root
  needed). ``root`` prefixes every path: for tests whose ``/run`` is a sandbox directory only.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from daemonstore import mountinfo, paths
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host


@dataclass(frozen=True)
class StoreStatus:
    path: str
    mounted: bool
    reason: str
    entry: mountinfo.MountInfoEntry | None = None


class StoreNotMounted(DaemonStoreError, RuntimeError):
    """Raised instead of handing out a path that is not really a mounted store."""

    def __init__(self, status: StoreStatus) -> None:
        super().__init__(f"{status.path}: {status.reason}")
        self.status = status


def judge(path: str, seen: int | OSError, table: str, daemon: str, user_hash: str, *,
          cache: bool = False) -> StoreStatus:
    """The store at ``path`` (as this process names it) is ready if the mount ``seen`` (the id
    a stat of ``path`` gave, or the error it raised) is mounted exactly at ``path`` in ``table``
    (this process's mountinfo) and its root is the user's vault directory of ``daemon``."""
    if isinstance(seen, OSError):
        return StoreStatus(path, False, f"cannot be reached: {seen.strerror}")
    by_id = {e.mount_id: e for e in mountinfo.parse(table)}
    top = by_id.get(seen)
    if top is None or top.mount_point != path:
        return StoreStatus(path, False, "exists but nothing is mounted on it (the user is not "
                           "signed in, or sign-in has not finished)")
    sub = paths.store_in_vault(daemon, cache)
    if not top.root.endswith("/" + sub):
        return StoreStatus(path, False, f"the mount there has root {top.root!r}, not the "
                           f"user's vault directory {sub!r}", top)
    if user_hash not in top.root and top.root != "/" + sub:
        return StoreStatus(path, False, f"the mount there comes from another user's vault "
                           f"({top.root!r})", top)
    return StoreStatus(path, True, "mounted", top)


def store_status(host: Host, daemon: str, user_hash: str, *, cache: bool = False) -> StoreStatus:
    """Where the store is, and whether a bind of the user's vault is what this process sees
    there (in the host's current namespace: each daemon asks about its own view)."""
    path = paths.user_store(daemon, user_hash, cache)
    try:
        # which mount does this process actually reach at the path? (stat's mnt_id)
        seen: int | OSError = host.stat(path, safe=True).mnt_id
    except OSError as exc:
        seen = exc
    return judge(path, seen, host.mountinfo(), daemon, user_hash, cache=cache)


def store_status_here(daemon: str, user_hash: str, *, cache: bool = False,
                      root: str = "/") -> StoreStatus:
    """:func:`store_status` for this process's own mount namespace, without a Host: the mount
    id of the plain path (``statx``, no symlink followed) against ``/proc/self/mountinfo``.
    ``root`` (tests only) is where ``/run`` lives, e.g. a kernel sandbox's directory; the
    status's path is then the path under it, the one the process can open."""
    from daemonstore.kernel import local  # only a Host-less daemon loads the kernel backend

    path = here_path(paths.user_store(daemon, user_hash, cache), root)
    try:
        seen: int | OSError = local.mount_id(path)
    except OSError as exc:
        seen = exc
    return judge(path, seen, local.read_mountinfo(), daemon, user_hash, cache=cache)


def here_path(path: str, root: str = "/") -> str:
    """``path`` (ChromeOS's absolute path) as seen below ``root``."""
    if not posixpath.isabs(root):
        raise ValueError(f"root must be an absolute path: {root!r}")
    return posixpath.normpath(posixpath.join(root, path.lstrip("/")))


def require_store(host: Host, daemon: str, user_hash: str, *, cache: bool = False) -> str:
    """The store path, or :class:`StoreNotMounted` (never a path nobody should write to)."""
    status = store_status(host, daemon, user_hash, cache=cache)
    if not status.mounted:
        raise StoreNotMounted(status)
    return status.path


def require_store_here(daemon: str, user_hash: str, *, cache: bool = False,
                       root: str = "/") -> str:
    """:func:`require_store` for this process's own view (:func:`store_status_here`)."""
    status = store_status_here(daemon, user_hash, cache=cache, root=root)
    if not status.mounted:
        raise StoreNotMounted(status)
    return status.path
