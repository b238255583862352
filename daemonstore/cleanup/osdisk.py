"""``OsDisk``: the cleanup's :class:`~daemonstore.cleanup.apply.Disk` on a plain directory tree
through ``os`` and ``shutil`` -- a tiny adapter so the cleanup's threshold logic and ordering run
under pyfakefs, which fakes exactly these calls (``fs.set_disk_usage(total)`` fakes the disk
size, ``fs.add_mount_point`` another filesystem).

Free space comes from ``shutil.disk_usage``, which is ``statvfs`` (``f_blocks * f_frsize``,
``f_bavail * f_frsize``) in CPython and what pyfakefs fakes (it does not fake ``os.statvfs``).
``Stat.mnt_id`` is the device number: it tells filesystems apart, not two bind mounts of one
filesystem. ``safe=True`` checks each component with ``lstat`` before the call: correct for a
tree nobody changes meanwhile, but racy; for hostile trees use a Host (the KernelHost resolves
with ``openat2(RESOLVE_NO_SYMLINKS)``).

Bind mounts are emulated as path aliases: ``binds={target: source}`` makes every path at or
below ``target`` name the same file below ``source`` (same device and inode, as a bind shows),
and ``mountinfo()`` lists one line per bind, so a signed-in user -- the bind
``/home/.shadow/H/mount`` of ``.../vault``, and ``/run/daemon-store-cache/<d>/H`` of the
vault's ``root/.cache/<d>`` -- is found as on a Host.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat as stat_mod
from collections.abc import Mapping

from daemonstore import mountinfo
from daemonstore.host import Stat


class OsDisk:
    """Sandbox-absolute paths (``/`` is ``root``) onto a real (or pyfakefs) directory."""

    kind = "os"

    def __init__(self, root: str, binds: Mapping[str, str] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.binds = dict(binds or {})

    def _alias(self, path: str) -> str:
        """Apply the bind aliases (longest target first, until none applies)."""
        for _ in range(len(self.binds) + 1):
            for target in sorted(self.binds, key=len, reverse=True):
                if path == target or path.startswith(target + "/"):
                    path = self.binds[target] + path[len(target):]
                    break
            else:
                return path
        raise OSError(errno.ELOOP, "bind aliases loop", path)

    def _real(self, path: str, *, safe: bool, final: bool = False) -> str:
        """The os path; ``safe``: ELOOP if a component (the last one too with ``final``) is a
        symlink."""
        if not path.startswith("/"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        parts = [p for p in path.split("/") if p]
        if ".." in parts:
            raise OSError(errno.EINVAL, "'..' is not allowed", path)
        parts = [p for p in self._alias("/" + "/".join(parts)).split("/") if p]
        real = self.root
        for index, part in enumerate(parts):
            real = os.path.join(real, part)
            last = index == len(parts) - 1
            if safe and (final or not last):
                try:
                    if stat_mod.S_ISLNK(os.lstat(real).st_mode):
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                except FileNotFoundError:
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
        return real

    def statvfs(self, path: str, *, safe: bool = False) -> tuple[int, int]:
        usage = shutil.disk_usage(self._real(path, safe=safe, final=True))
        return usage.total, usage.free

    def lstat(self, path: str, *, safe: bool = False) -> Stat:
        st = os.lstat(self._real(path, safe=safe))
        return Stat(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, size=st.st_size,
                    ino=st.st_ino, dev=st.st_dev, nlink=st.st_nlink, mnt_id=st.st_dev)

    def listdir(self, path: str, *, safe: bool = False) -> list[str]:
        return sorted(os.listdir(self._real(path, safe=safe, final=True)))

    def unlink(self, path: str, *, safe: bool = False) -> None:
        os.unlink(self._real(path, safe=safe))  # unlink(2) never follows the last component

    def rmdir(self, path: str, *, safe: bool = False) -> None:
        real = self._real(path, safe=safe)
        if stat_mod.S_ISLNK(os.lstat(real).st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        os.rmdir(real)

    def read_file(self, path: str, *, safe: bool = False) -> bytes:
        with open(self._real(path, safe=safe, final=True), "rb") as f:
            return f.read()

    def mountinfo(self, namespace: str | None = None) -> str:
        return mountinfo.render(
            mountinfo.parse_line(f"{i} 1 0:0 {mountinfo.escape(source)} "
                                 f"{mountinfo.escape(target)} rw - none osdisk rw")
            for i, (target, source) in enumerate(self.binds.items(), start=2))
