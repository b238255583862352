"""Read-only questions about the sessions on a host (plan layer, pure: one mountinfo read or one
``lstat``): who is signed in, which mounts are a user's, whether a path is a real directory."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from daemonstore import mountinfo, paths
from daemonstore.host import Host

__all__ = ["existing_dir", "mounted_users", "store_user", "user_mounts"]


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
    return [e for e in entries
            if any(_under(e.mount_point, p) for p in prefixes)
            or store_user(e.mount_point) == user_hash]


def existing_dir(host: Host, path: str) -> bool:
    """Is ``path`` a directory, no symlink followed on the way (``lstat``, ``safe=True``)?"""
    try:
        return host.lstat(path, safe=True).is_dir
    except OSError:
        return False
