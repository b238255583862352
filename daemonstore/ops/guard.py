"""Mount-point guards: a mount point in a user-writable directory that its owner cannot rmdir
(plan layer: :class:`GuardMountPoint` only calls the Host it is given).

Why (SECURITY.md, "Mount points chronos cannot remove"): ``/home/chronos`` belongs to chronos,
and so do ``/home/chronos/u-<H>`` and ``/home/chronos/user``. From a mount namespace made before
sign-in -- where those names are plain empty directories -- a chronos process may ``rmdir``
one (the kernel refuses it with EBUSY only where it is a mount point in the *caller's*
namespace: ``is_local_mountpoint()``), and the kernel then detaches every mount on that dentry
in every namespace (``__detach_mounts()``): a signed-in user's home vanishes mid-session.
``rename(2)`` of an empty directory *over* it does the same.

So before the bind, the directory underneath gets a **guard**: a root-owned directory
(:data:`GUARD_NAME`, mode :data:`GUARD_MODE`, so not writable by its owner's group or anyone
else) holding one root-owned file (:data:`MARKER_NAME`). ``rmdir`` of the mount point is then
``ENOTEMPTY`` for chronos in every namespace, and chronos can never empty it:

* the guard cannot be removed (it is not empty) nor emptied (chronos may not write in it);
* it cannot leave the mount point: moving a directory to another parent needs write
  permission on the directory itself (``vfs_rename``: its ``..`` changes), which chronos lacks;
  a rename *within* the mount point keeps it inside.

Only root undoes it: :func:`remove_guard`, which ``RemoveDir`` calls when the guard is the only
thing left in a directory it must remove (sign-out, rollback, repair, a guest's clean-up).
A guard is recognised only as a root-owned directory whose entries are nothing but a
root-owned regular marker: chronos cannot make one, so a look-alike in a user's home (were a
mount to appear there meanwhile) is never taken for a guard and nothing of the user's is
removed.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from daemonstore.host import Host
from daemonstore.ops.base import Op, quote
from daemonstore.ops.tree import RemoveTree

__all__ = ["GUARD_MODE", "GUARD_NAME", "MARKER_MODE", "MARKER_NAME", "GuardMountPoint",
           "is_guard", "remove_guard"]

#: the guard directory inside a mount point (hidden: ls of the unmounted directory stays clean)
GUARD_NAME = ".daemonstore-guard"
#: the file that keeps the guard non-empty
MARKER_NAME = "keep"
#: root:root r-xr-xr-x: nobody but root may add or remove an entry
GUARD_MODE = 0o555
MARKER_MODE = 0o444
MARKER_TEXT = (b"root-owned: keeps this mount point from being removed by its owner while a\n"
               b"user's home is mounted on it (daemonstore SECURITY.md).\n")
ROOT = 0


def guard_path(mount_point: str) -> str:
    return f"{mount_point}/{GUARD_NAME}"


@dataclass(frozen=True)
class GuardMountPoint(Op):
    """Put a guard (module doc) into mount point ``path`` before anything is mounted on it.

    Idempotent: a guard already there (an earlier sign-in whose sign-out could not remove the
    directory) is kept. Anything else the directory's owner planted at the guard's name is
    removed like every planted entry in a user-owned directory (a symlink unlinked, never
    followed; a tree removed without crossing a mount) and the guard made afresh. Every call is
    ``safe`` (no symlink in any component). Undone by ``RemoveDir`` of the mount point (rollback,
    sign-out), which removes a guard that is the directory's only entry."""

    path: str

    def apply(self, host: Host) -> None:
        guard = guard_path(self.path)
        parent = self.path.rsplit("/", 1)[0] or "/"
        if host.stat(self.path, safe=True).mnt_id != host.lstat(parent, safe=True).mnt_id:
            # something is mounted there now (a mount point renamed in from another
            # namespace): what is below it is someone's data, never the place for a guard
            raise OSError(errno.EBUSY, "a mount is on the mount point before its bind", self.path)
        try:
            host.mkdir(guard, GUARD_MODE, safe=True)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            if not is_guard(host, self.path, alone=False):
                # planted by the mount point's owner: removed, never followed, never crossing
                # a mount (ChromeOS removes an unmounted u-<H> recursively anyway,
                # EnsureUserMountPoints), then made afresh
                if host.lstat(guard, safe=True).is_dir:
                    RemoveTree(guard).apply(host)
                else:
                    host.unlink(guard, safe=True)
                host.mkdir(guard, GUARD_MODE, safe=True)
        # chown first, then chmod, then look: from the chmod on nobody else can change what is
        # in it, so what listdir sees is what stays
        host.chown(guard, ROOT, ROOT, safe=True)
        host.chmod(guard, GUARD_MODE, safe=True)
        if not host.listdir(guard, safe=True):
            host.write_file(f"{guard}/{MARKER_NAME}", MARKER_TEXT, mode=MARKER_MODE, safe=True)

    def to_line(self) -> str:
        return (f"install -d -m {GUARD_MODE:04o} -o 0 -g 0 {quote(guard_path(self.path))}"
                f" && touch {quote(guard_path(self.path) + '/' + MARKER_NAME)}"
                "  # its owner cannot rmdir the mount point")


def is_guard(host: Host, mount_point: str, *, alone: bool = True) -> bool:
    """Does ``mount_point`` hold a guard of ours (module doc: root-owned directory, not group-
    or world-writable, whose entries are only a root-owned regular marker)? ``alone``: and
    nothing else is in ``mount_point``. Never follows a symlink."""
    guard = guard_path(mount_point)
    try:
        if alone and host.listdir(mount_point, safe=True) != [GUARD_NAME]:
            return False
        st = host.lstat(guard, safe=True)
        if not st.is_dir or (st.uid, st.gid) != (ROOT, ROOT) or st.perm & 0o022:
            return False
        names = host.listdir(guard, safe=True)
        if names not in ([], [MARKER_NAME]):
            return False
        if names:
            marker = host.lstat(f"{guard}/{MARKER_NAME}", safe=True)
            return marker.is_file and marker.uid == ROOT and marker.nlink == 1
    except OSError:
        return False
    return True


def remove_guard(host: Host, mount_point: str) -> bool:
    """Remove the guard in ``mount_point`` if the directory holds nothing else and it is ours
    (:func:`is_guard`); True if one was removed. Raises what unlink/rmdir raise."""
    if not is_guard(host, mount_point):
        return False
    guard = guard_path(mount_point)
    try:
        host.unlink(f"{guard}/{MARKER_NAME}", safe=True)
    except FileNotFoundError:
        pass  # a guard cut short before its marker (a SIGKILL)
    host.rmdir(guard, safe=True)
    return True
