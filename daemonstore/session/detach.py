"""Taking off a user's mounts found by identity (plan layer: only calls the Host it is given).

A mount found away from where sign-in put it (queries.stray_mounts) is taken off by the path
mountinfo shows for it, but only after checking that this path still reaches *that* mount
(``stat().mnt_id``): its mount point may be renamed again from another namespace at any time,
and a path that now reaches something else must not be unmounted. Lazy (``MNT_DETACH``): the
mount is nobody's legitimate business, and an attacker may hold it busy. Bounded: a few fresh
reads of mountinfo, then what is left is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from daemonstore import mountinfo
from daemonstore.host import Host

__all__ = ["ROUNDS", "detach_found", "left_note"]

#: fresh mountinfo reads before giving up on a mount that keeps moving
ROUNDS = 8


def detach_found(host: Host,
                 find: Callable[[Sequence[mountinfo.MountInfoEntry]],
                                list[mountinfo.MountInfoEntry]]) -> tuple[list[str], list[str]]:
    """Detach every mount ``find(entries)`` selects, topmost first, re-reading mountinfo until
    ``find`` selects nothing (at most :data:`ROUNDS` reads). Returns (mount points detached,
    mount points still there after the last round: they kept moving)."""
    done: list[str] = []
    left: list[mountinfo.MountInfoEntry] = []
    for _round in range(ROUNDS):
        left = find(mountinfo.parse(host.mountinfo()))
        if not left:
            return done, []
        for e in reversed(left):  # mount order reversed: submounts before their parents
            try:
                if host.stat(e.mount_point, safe=True).mnt_id != e.mount_id:
                    continue  # moved again (or stacked over): the next read finds it
                host.umount(e.mount_point, detach=True, safe=True)
            except OSError:
                continue  # gone, or the path changed under us: the next read says
            done.append(e.mount_point)
    return done, [e.mount_point for e in left]


def left_note(mount_point: str) -> str:
    """The warning for a mount :func:`detach_found` could not catch."""
    return (f"{mount_point}: a mount of the user could not be detached in {ROUNDS} tries "
            "(it kept moving, or umount failed)")
