"""Entries planted where sign-in puts a mount point inside a user-owned directory (plan layer).

``/home/chronos`` belongs to chronos (uid 1000), so a chronos process can put a symlink at
``/home/chronos/user`` or a file at ``/home/chronos/u-<H>``. Refusing such an entry, as every
other place in the vault is refused (SECURITY.md, "No symlink anywhere"), would lock the user
out for good: nothing else ever removes it. So there, and only there, the entry is removed --
``unlinkat`` of the name under the pinned parent directory (``Host.unlink(safe=True)``: no
symlink followed on the way, and unlink never follows the last component) -- and the
directory is made as for a new user. An entry that turns into a directory meanwhile is
``EISDIR``: the sign-in fails and rolls back, nothing is removed.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from daemonstore import paths
from daemonstore.host import Host, Stat
from daemonstore.ops import Op
from daemonstore.ops.base import quote

__all__ = ["RemovePlanted", "user_owned_mount_point", "user_owned_mount_points"]


def user_owned_mount_points(user_hash: str) -> frozenset[str]:
    """The mount points sign-in makes in chronos-owned ``/home/chronos`` for ``user_hash``."""
    return frozenset((paths.HOME_CHRONOS_USER, paths.home_chronos(user_hash)))


def user_owned_mount_point(path: str, user_hash: str) -> bool:
    """Is ``path`` one of the mount points sign-in makes in chronos-owned ``/home/chronos``?"""
    return path in user_owned_mount_points(user_hash)


@dataclass(frozen=True)
class RemovePlanted(Op):
    """``unlink P`` of a non-directory planted at a mount point (module doc); ``kind`` is what
    the plan saw there (for the dry run and the warning)."""

    path: str
    kind: str

    def apply(self, host: Host) -> None:
        st = host.lstat(self.path, safe=True)
        if st.is_dir:
            raise OSError(errno.EISDIR, "a directory appeared where a planted "
                          f"{self.kind} was to be removed", self.path)
        host.unlink(self.path, safe=True)

    def to_line(self) -> str:
        return f"rm -f {quote(self.path)}  # a planted {self.kind}, never followed"


def planted_kind(st: Stat) -> str | None:
    """What a non-directory is called in the plan, None for a directory."""
    if st.is_dir:
        return None
    return "symbolic link" if st.is_symlink else "file or special file"
