"""Read-only questions about the sessions on a host (plan layer, pure: one mountinfo read or one
``lstat``): who is signed in, which mounts are a user's, whether a path is a real directory.

**A user's mounts are found by identity, not by path** (SECURITY.md, "mounts by identity"): a
mount point in chronos-owned ``/home/chronos`` can be swapped (``renameat2(RENAME_EXCHANGE)``)
between sign-in's resolution and ``mount(2)``, and a mount point can be renamed from another
mount namespace (the kernel refuses to rename a mount point only in the caller's namespace:
``is_local_mountpoint()``, fs/namei.c ``vfs_rename()``), so a user's mount may sit at any path.
What it cannot change is what the mount shows: its device and its root inside that device's
filesystem. Every mount whose root lies under ``/home/.shadow/<H>/`` on the filesystem holding
that directory, every mount of the loop vault's (or the guest tmpfs's) device, and everything
mounted on top of those, is the user's, wherever it is."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from daemonstore import mountinfo, paths
from daemonstore.host import Host
from daemonstore.mounttree import MountView

__all__ = ["VaultIdentity", "existing_dir", "mounted_users", "store_user", "stray_mounts",
           "user_mounts", "vault_identity"]


def mounted_users(host: Host) -> list[str]:
    """Hashes of the signed-in users, in sign-in order: the vault mounts at
    ``/home/.shadow/<H>/mount`` in the current namespace's mountinfo."""
    found: list[str] = []
    prefix = paths.SHADOW + "/"
    for e in mountinfo.parse(host.mountinfo()):
        mp = e.mount_point
        if mp.startswith(prefix) and mp.endswith("/mount"):
            user_hash = mp[len(prefix):-len("/mount")]
            try:
                paths.check_hash(user_hash)
            except paths.BadName:
                continue
            if user_hash not in found:
                found.append(user_hash)
    return found


def store_user(mount_point: str) -> str | None:
    """The ``<H>`` of a mount point ``/run/daemon-store[-cache]/<d>/<H>[/...]``, else None."""
    for base in paths.STORE_BASES:
        if mount_point.startswith(base + "/"):
            parts = mount_point[len(base) + 1:].split("/")
            if len(parts) >= 2:
                return parts[1]
    return None


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class VaultIdentity:
    """What every mount of one user shows, wherever it is mounted: a root under ``root`` on
    device ``dev`` (``maj:min``), or any root on one of ``devices`` (a loop vault's ext4, a
    guest's tmpfs: the whole device is the user's)."""

    dev: str | None
    root: str | None
    devices: frozenset[str] = frozenset()

    def owns(self, e: mountinfo.MountInfoEntry) -> bool:
        if e.dev in self.devices:
            return True
        return (self.dev is not None and self.root is not None and e.dev == self.dev
                and _under(e.root, self.root))


def _containing(entries: Sequence[mountinfo.MountInfoEntry],
                path: str) -> mountinfo.MountInfoEntry | None:
    """The mount a lookup of ``path`` ends in (deepest visible mount point on the way)."""
    view = MountView(entries)
    best: mountinfo.MountInfoEntry | None = None
    for e in entries:
        if ((_under(path, e.mount_point) or e.mount_point == "/")
                and (best is None or len(e.mount_point) > len(best.mount_point))):
            best = view.top(e.mount_point) or best
    return best


def vault_identity(entries: Sequence[mountinfo.MountInfoEntry], user_hash: str,
                   vault_mount: str | None = None) -> VaultIdentity:
    """The identity of ``user_hash``'s mounts in this mount table (module doc). The shadow
    directory ``/home/.shadow/<H>`` lives on a root-owned path, so finding *its* mount by path
    is safe; the vault mounted at ``vault_mount`` (default ``/home/.shadow/<H>/mount``) adds
    its whole device when it is not that filesystem (a loop vault, a guest's tmpfs)."""
    shadow = paths.shadow(user_hash)
    base = _containing(entries, shadow)
    dev = root = None
    if base is not None:
        dev = base.dev
        root = posixpath.normpath(posixpath.join(base.root,
                                                 posixpath.relpath(shadow, base.mount_point)))
    devices = frozenset(e.dev for e in entries
                        if e.mount_point == (vault_mount or paths.vault_mount(user_hash))
                        and e.dev != dev)
    return VaultIdentity(dev, root, devices)


def user_mounts(entries: Sequence[mountinfo.MountInfoEntry], user_hash: str,
                vault_mount: str | None = None) -> list[mountinfo.MountInfoEntry]:
    """The user's mounts (and anything mounted below them), hidden ones too, in mount order;
    ``vault_mount`` defaults to ``/home/.shadow/<H>/mount`` (a guest's is its ephemeral
    mount)."""
    prefixes = [vault_mount or paths.vault_mount(user_hash), paths.home_root(user_hash),
                paths.home_user(user_hash), paths.home_chronos(user_hash)]
    vaults = [e for e in entries if e.mount_point == prefixes[0]]
    if vaults:
        # /home/chronos/user is this user's when it shows the vault's user/ directory
        want = posixpath.join(vaults[-1].root, "user")
        if any(e.mount_point == paths.HOME_CHRONOS_USER and e.dev == vaults[-1].dev
               and e.root == want for e in entries):
            prefixes.append(paths.HOME_CHRONOS_USER)
    elif vault_mount is None:
        # the vault is gone (a sign-out that failed part-way, or was killed): a directory
        # vault's user/ still names the user in its root, so a second sign-out takes it too
        mine = f"/.shadow/{user_hash}/vault/user"
        if any(e.mount_point == paths.HOME_CHRONOS_USER and e.root.endswith(mine)
               for e in entries):
            prefixes.append(paths.HOME_CHRONOS_USER)
    identity = vault_identity(entries, user_hash, vault_mount)
    mine = {e.mount_id for e in entries
            if any(_under(e.mount_point, p) for p in prefixes)
            or store_user(e.mount_point) == user_hash or identity.owns(e)}
    grew = True
    while grew:  # and whatever is mounted on top of those, wherever they are
        more = {e.mount_id for e in entries if e.parent_id in mine} - mine
        grew = bool(more)
        mine |= more
    return [e for e in entries if e.mount_id in mine]


def stray_mounts(entries: Sequence[mountinfo.MountInfoEntry], user_hash: str,
                 vault_mount: str | None = None) -> list[mountinfo.MountInfoEntry]:
    """The user's mounts (by identity) found away from every place sign-in mounts them: a bind
    that landed on a swapped-in directory, a mount point renamed from another namespace (a
    home, or ``/run/daemon-store/<d>/<H>`` renamed to ``<H>.keep``). Submounts of those too."""
    homes = [vault_mount or paths.vault_mount(user_hash), paths.home_root(user_hash),
             paths.home_user(user_hash), paths.home_chronos(user_hash),
             paths.HOME_CHRONOS_USER]
    mine = user_mounts(entries, user_hash, vault_mount)
    placed = {e.mount_id for e in mine
              if any(_under(e.mount_point, p) for p in homes)
              or (store_user(e.mount_point) == user_hash
                  and e.mount_point.count("/") == 4)}  # /run/daemon-store[-cache]/<d>/<H>
    stray = [e for e in mine if e.mount_id not in placed and e.parent_id not in placed]
    stray_ids = {e.mount_id for e in stray}
    grew = True
    while grew:
        more = {e.mount_id for e in mine if e.parent_id in stray_ids} - stray_ids
        grew = bool(more)
        stray_ids |= more
    return [e for e in mine if e.mount_id in stray_ids]


def existing_dir(host: Host, path: str) -> bool:
    """Is ``path`` a directory, no symlink followed on the way (``lstat``, ``safe=True``)?"""
    try:
        return host.lstat(path, safe=True).is_dir
    except OSError:
        return False
