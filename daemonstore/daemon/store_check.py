"""Is a daemon store *really* mounted? (the trap in docs/chromeos.md §4.4 and §7
item 1: ``/run/daemon-store/<d>/<hash>`` survives sign-out as an empty directory, so an
existence check lets a daemon write into tmpfs, where the data is lost and visible to no user).

A store is ready only when the topmost mount at its path is the bind of that user's vault
directory: the mount's root ends with ``/<hash>/…/root/<d>`` (``/root/.cache/<d>`` for the cache;
``/root/<d>`` alone when the vault is its own filesystem, e.g. an ext4 loop image). This module is
pure: it reads the mountinfo of the namespace the caller lives in (each daemon asks about its own
view) and never creates anything.
"""

from __future__ import annotations

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


def store_status(host: Host, daemon: str, user_hash: str, *, cache: bool = False) -> StoreStatus:
    """Where the store is, and whether a bind of the user's vault is what this process sees
    there (in the host's current namespace: each daemon asks about its own view)."""
    path = paths.user_store(daemon, user_hash, cache)
    try:
        # which mount does this process actually reach at the path? (stat's mnt_id)
        seen = host.stat(path, safe=True)
    except OSError as exc:
        return StoreStatus(path, False, f"cannot be reached: {exc.strerror}")
    by_id = {e.mount_id: e for e in mountinfo.parse(host.mountinfo())}
    top = by_id.get(seen.mnt_id)
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


def require_store(host: Host, daemon: str, user_hash: str, *, cache: bool = False) -> str:
    """The store path, or :class:`StoreNotMounted` (never a path nobody should write to)."""
    status = store_status(host, daemon, user_hash, cache=cache)
    if not status.mounted:
        raise StoreNotMounted(status)
    return status.path
