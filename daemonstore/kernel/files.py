"""Kernel layer, the Host interface's file methods on the real kernel (stat, mkdir, chown, chmod,
read and write, links, fifos, directory listing, statvfs): each resolves its path with the
confined openat2 of :mod:`daemonstore.kernel.resolve` and acts on the fd it got, never on a path
a second lookup could see differently.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat as stat_mod
import struct
import sys
from collections.abc import Sequence

from daemonstore.host import Stat
from daemonstore.kernel.resolve import Resolver, fd_path
from daemonstore.kernel.syscalls import RelabelErrors, last_error, os_error, read_all, relabel
from daemonstore.kernel.uapi import (
    AT_EMPTY_PATH,
    O_CLOEXEC,
    O_DIRECTORY,
    O_NOFOLLOW,
    O_PATH,
    OPEN_HOW_SIZE_VER0,
    STATX_WANTED,
)

#: struct statx (include/uapi/linux/stat.h), as far as Stat needs it: mask, blksize, attributes,
#: nlink, uid, gid, mode, (pad), ino, size, then dev_major, dev_minor, mnt_id at offset 136
_STATX = struct.Struct("=IIQIIIH2xQQ88xIIQ")
#: reopen what mkdir made, for its exact mode: never through a symlink swapped in meanwhile
_REOPEN_DIR = O_PATH | O_NOFOLLOW | O_CLOEXEC | O_DIRECTORY
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
#: lstat's open: a final symlink is opened itself, not followed
_LSTAT = O_PATH | O_NOFOLLOW


class FileMethods(Resolver):
    """Host's file methods (host.py), plus :meth:`open_fd` for kernel-only callers.

    ``_statx_buf`` is this host's ``struct statx`` buffer (set up by KernelHost's constructor)."""

    _statx_buf: ctypes.Array[ctypes.c_char]
    _statx_addr: int

    def _set_mode_exact(self, dirfd: int, name: str, mode: int, extra: int = 0) -> None:
        """chmod what mkdir/mkfifo just created: they apply the umask, host.py wants the exact
        mode. O_NOFOLLOW: if a symlink was swapped in meanwhile we fail instead of chmod'ing its
        target."""
        fd = os.open(name, O_PATH | O_NOFOLLOW | O_CLOEXEC | extra, dir_fd=dirfd)
        try:
            self._chmod_fd(fd, mode, name)
        finally:
            os.close(fd)

    def _stat_fd(self, fd: int, path: str) -> Stat:
        """Stat of exactly what ``fd`` refers to, with its mount id: one statx(AT_EMPTY_PATH);
        fstat plus /proc/self/fdinfo (:func:`_mnt_id`) where statx or a field is missing."""
        calls = self._calls
        if calls.have_statx:
            if not calls.statx(calls.nr_statx, fd, b"", AT_EMPTY_PATH, STATX_WANTED,
                               self._statx_addr):
                (mask, _, _, nlink, uid, gid, mode, ino, size, major, minor,
                 mnt_id) = _STATX.unpack_from(self._statx_buf)
                if mask & STATX_WANTED == STATX_WANTED:
                    return Stat(mode, uid, gid, size, ino, os.makedev(major, minor), nlink,
                                mnt_id)
            elif ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM):
                raise last_error(path)
            else:
                calls.have_statx = False  # kernel < 4.11, or a seccomp filter: fstat from now on
        return _fstat(fd, path)

    def _chmod_fd(self, fd: int, mode: int, path: str) -> None:
        """chmod exactly what the O_PATH ``fd`` refers to: fchmodat2(fd, "", AT_EMPTY_PATH)
        (Linux 6.6+), else chmod of its /proc/self/fd magic link (which costs a path walk)."""
        calls = self._calls
        if calls.have_fchmodat2:
            if not calls.fchmodat2(calls.nr_fchmodat2, fd, b"", mode, AT_EMPTY_PATH):
                return
            if ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM):
                raise last_error(path)
        with RelabelErrors(path):
            os.chmod(fd_path(fd), mode)
        calls.have_fchmodat2 = False  # the old way works where fchmodat2 does not

    def _open_no_device(self, path: str, flags: int) -> int:
        """Open an existing file for ``safe`` reading or writing, never a device node.

        Opening a device node can act (rewind a tape, block on a tty) and reading one can be
        endless (``/dev/zero``), so with ``safe`` every mount is treated as if it were ``nodev``:
        EACCES, what the kernel itself answers there. The type is checked on an O_PATH fd (which
        opens nothing), then exactly that inode is reopened through ``/proc/self/fd/N`` (proc(5)):
        no window in which another file could be swapped in. A final symlink is ELOOP."""
        with self._opened(path, O_PATH | O_NOFOLLOW, safe=True) as pfd, RelabelErrors(path):
            mode = os.fstat(pfd).st_mode
            if stat_mod.S_ISLNK(mode):
                raise os_error(errno.ELOOP, path)
            if stat_mod.S_ISCHR(mode) or stat_mod.S_ISBLK(mode):
                raise OSError(errno.EACCES, "a device node: not opened (safe access treats "
                              "every mount as nodev)", path)
            return os.open(fd_path(pfd), flags | O_CLOEXEC)

    def open_fd(self, path: str, flags: int, *, mode: int = 0o600, safe: bool = False) -> int:
        """An fd of a sandbox path (openat2 confined like every path here) for kernel-only code
        that needs the open file itself, e.g. a loop device's backing file. The caller owns
        (and closes) it; O_CLOEXEC is always added. ``mode`` only counts with O_CREAT (openat2
        refuses a mode without it: EINVAL)."""
        # O_TMPFILE includes O_DIRECTORY's bit: only all of its bits mean O_TMPFILE
        creating = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE
        return self._open(path, flags, safe=safe, mode=mode if creating else 0)

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
              safe: bool = False) -> None:
        if not parents:
            self._mkdir_one(path, mode, safe)
            return
        prefix = ""
        for part in (p for p in path.split("/") if p):
            prefix += "/" + part
            try:
                self._mkdir_one(prefix, mode, safe)
            except FileExistsError:
                if not self.stat(prefix, safe=safe).is_dir:  # mkdir -p accepts only dirs
                    raise

    def _mkdir_one(self, path: str, mode: int, safe: bool) -> None:
        dirfd, name = self._parent_of(path, safe)
        try:
            self._mkdir_in(dirfd, name.encode(_FS_ENCODING, _FS_ERRORS), mode, path)
        finally:
            os.close(dirfd)

    def _mkdir_in(self, dirfd: int, bname: bytes, mode: int, path: str) -> None:
        """mkdirat(dirfd, bname), then the exact mode on what it made (mkdir applies the umask):
        reopened O_PATH|O_NOFOLLOW|O_DIRECTORY, fchmodat2 on that fd. Errors name ``path``.
        The hot path of startup (bench/boot.py), shared with make_store (kernel/store.py):
        _set_mode_exact written out, the name encoded once for both calls."""
        try:
            os.mkdir(bname, mode, dir_fd=dirfd)
            fd = os.open(bname, _REOPEN_DIR, dir_fd=dirfd)
            try:
                self._chmod_fd(fd, mode, path)
            finally:
                os.close(fd)
        except OSError as exc:
            raise relabel(exc, path) from None

    def stat(self, path: str, *, safe: bool = False) -> Stat:
        fd = self._open(path, O_PATH, safe=safe)
        try:
            return self._stat_fd(fd, path)
        finally:
            os.close(fd)

    def lstat(self, path: str, *, safe: bool = False) -> Stat:
        # O_PATH|O_NOFOLLOW opens a final symlink itself, even with RESOLVE_NO_SYMLINKS
        # (openat2(2)): safe forbids *following* symlinks, and lstat follows none at the end
        fd = self._open(path, O_PATH | O_NOFOLLOW, safe=safe)
        try:
            return self._stat_fd(fd, path)
        finally:
            os.close(fd)

    def lstat_many(self, paths: Sequence[str], *, safe: bool = False) -> list[Stat | OSError]:
        """Host.lstat_many: for each path the system calls of :meth:`lstat` (openat2, statx,
        close; _stat_fd's fstat where statx is missing or short), in one loop with what they
        share looked up once (startup's templates, issue 14 item 6)."""
        calls = self._calls
        how = ((calls.hows_safe if safe else calls.hows_in_root).get(_LSTAT)
               or calls.how(_LSTAT, 0, safe))
        openat2, nr, statx, nr_statx = calls.openat2, calls.nr_openat2, calls.statx, calls.nr_statx
        buf, addr, unpack = self._statx_buf, self._statx_addr, _STATX.unpack_from
        root_fd, close, makedev = self._current_ns.root_fd, os.close, os.makedev
        out: list[Stat | OSError] = []
        for path in paths:
            try:
                if path[:1] != "/" or not calls.have_statx:
                    out.append(self.lstat(path, safe=safe))
                    continue
                rel = path.lstrip("/").encode(_FS_ENCODING, _FS_ERRORS) or b"."
                fd = openat2(nr, root_fd, rel, how, OPEN_HOW_SIZE_VER0)
                if fd < 0:
                    fd = self._open_again(rel, how, path)
                try:
                    if statx(nr_statx, fd, b"", AT_EMPTY_PATH, STATX_WANTED, addr):
                        if ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM):
                            raise last_error(path)
                        calls.have_statx = False  # as _stat_fd
                    else:
                        (mask, _, _, nlink, uid, gid, mode, ino, size, major, minor,
                         mnt_id) = unpack(buf)
                        if mask & STATX_WANTED == STATX_WANTED:
                            out.append(Stat(mode, uid, gid, size, ino, makedev(major, minor),
                                            nlink, mnt_id))
                            continue
                    out.append(_fstat(fd, path))
                finally:
                    close(fd)
            except OSError as exc:
                out.append(exc)
        return out

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None:
        if follow_symlinks:
            fd = self._open(path, O_PATH, safe=safe)
            try:
                self._chown_fd(fd, uid, gid, safe, path)
            finally:
                os.close(fd)
            return
        with self._parent(path, safe=safe) as (dirfd, name), RelabelErrors(path):
            if safe:
                # fchownat(AT_SYMLINK_NOFOLLOW) has no fd of the entry itself: the check is on
                # the name in the pinned parent (callers use this only on root-owned /etc)
                _refuse_aliases(os.stat(name, dir_fd=dirfd, follow_symlinks=False), path)
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)

    def _chown_fd(self, fd: int, uid: int, gid: int, safe: bool, path: str) -> None:
        """chown exactly what the O_PATH ``fd`` refers to; with ``safe`` a hard link, device
        node, fifo or socket is refused first, checked on that very fd (host.py). Errors name
        ``path``. Shared by chown and make_store (kernel/store.py)."""
        try:
            if safe:
                _refuse_aliases(os.fstat(fd), path)  # checked on the fd we act on
            # fchownat(fd, "", AT_EMPTY_PATH): the inode the O_PATH fd refers to, as chown
            # of its /proc/self/fd magic link would, without the walk through /proc
            if self._calls.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH):
                raise last_error(path)
        except OSError as exc:
            raise relabel(exc, path) from None

    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None:
        flags = O_PATH | (0 if follow_symlinks else O_NOFOLLOW)
        fd = self._open(path, flags, safe=safe)
        try:
            st = os.fstat(fd)
            if stat_mod.S_ISLNK(st.st_mode):
                # Linux has no lchmod: fchmodat(AT_SYMLINK_NOFOLLOW) on a symlink is EOPNOTSUPP
                raise os_error(errno.EOPNOTSUPP, path)
            if safe:
                _refuse_aliases(st, path)  # on the fd we act on: no window for a swap
            self._chmod_fd(fd, mode, path)
        except OSError as exc:
            raise relabel(exc, path) from None
        finally:
            os.close(fd)

    def read_file(self, path: str, *, safe: bool = False) -> bytes:
        # O_NONBLOCK so a fifo without a writer reads as empty instead of hanging
        flags = os.O_RDONLY | os.O_NONBLOCK
        fd = self._open_no_device(path, flags) if safe else self._open(path, flags, safe=False)
        try:
            with RelabelErrors(path):
                return read_all(fd)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644, append: bool = False,
                   safe: bool = False) -> None:
        fd = self._open_for_write(path, mode, append, safe)
        try:
            with RelabelErrors(path):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _open_for_write(self, path: str, mode: int, append: bool, safe: bool) -> int:
        """Open for writing, creating with the exact ``mode`` (no umask).

        ``safe`` adds O_NOFOLLOW: ELOOP on a final symlink. O_NONBLOCK: a fifo without a reader
        is ENXIO, never a hang. Creation is tried with O_EXCL first so that only a file made
        here gets its mode set; EEXIST then ENOENT means a dangling symlink, whose target a
        plain O_CREAT open creates (open(2)) -- inside the sandbox, thanks to RESOLVE_IN_ROOT.
        """
        base = os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
        if safe:
            base |= O_NOFOLLOW
        try:
            fd = self._open(path, base | os.O_CREAT | os.O_EXCL, safe=safe, mode=mode)
        except FileExistsError:
            try:
                if safe:
                    return self._open_no_device(path, base & ~O_NOFOLLOW)
                return self._open(path, base, safe=safe)
            except FileNotFoundError:
                if safe:
                    raise
                fd = self._open(path, base | os.O_CREAT, safe=safe, mode=mode)
        with RelabelErrors(path):
            os.fchmod(fd, mode)
        return fd

    def symlink(self, target: str, path: str) -> None:
        with self._parent(path, safe=False) as (dirfd, name), RelabelErrors(path):
            os.symlink(target, name, dir_fd=dirfd)

    def readlink(self, path: str) -> str:
        with self._parent(path, safe=False) as (dirfd, name), RelabelErrors(path):
            return os.readlink(name, dir_fd=dirfd)

    def listdir(self, path: str, *, safe: bool = False) -> list[str]:
        with self._opened(path, os.O_RDONLY | O_DIRECTORY, safe=safe) as fd, RelabelErrors(path):
            return sorted(os.listdir(fd))

    def unlink(self, path: str, *, safe: bool = False) -> None:
        with self._parent(path, safe=safe) as (dirfd, name), RelabelErrors(path):
            os.unlink(name, dir_fd=dirfd)

    def rmdir(self, path: str, *, safe: bool = False) -> None:
        dirfd, name = self._parent_of(path, safe)
        try:
            os.rmdir(name, dir_fd=dirfd)
        except OSError as exc:
            raise relabel(exc, path) from None
        finally:
            os.close(dirfd)

    def mkfifo(self, path: str, mode: int = 0o644) -> None:
        with self._parent(path, safe=False) as (dirfd, name), RelabelErrors(path):
            os.mkfifo(name, mode, dir_fd=dirfd)
            self._set_mode_exact(dirfd, name, mode)

    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except OSError:
            return False
        return True

    def statvfs(self, path: str, *, safe: bool = False) -> tuple[int, int]:
        # fstatvfs on the O_PATH fd openat2 found (fstatfs accepts O_PATH fds since Linux 3.12,
        # open(2)): the filesystem of exactly the dentry resolution reached, mounts crossed
        with self._opened(path, O_PATH, safe=safe) as fd, RelabelErrors(path):
            st = os.fstatvfs(fd)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _fstat(fd: int, path: str) -> Stat:
    """Stat of ``fd`` without statx: fstat, and the mount id from /proc/self/fdinfo."""
    with RelabelErrors(path):
        return _to_stat(os.fstat(fd), _mnt_id(fd))


def _to_stat(st: os.stat_result, mnt_id: int = 0) -> Stat:
    return Stat(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, size=st.st_size, ino=st.st_ino,
                dev=st.st_dev, nlink=st.st_nlink, mnt_id=mnt_id)


def _mnt_id(fd: int) -> int:
    """The id of the mount an fd lives on (``mnt_id:`` in /proc/self/fdinfo, Linux 3.15+): the
    same number as mountinfo field 1, so a caller can tell *which* mount it is looking at."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    return 0


def _refuse_aliases(st: os.stat_result, path: str) -> None:
    """``safe`` chown/chmod change only what cannot be another file's name (SECURITY.md,
    "Ownership rule"): a directory, a symlink (lchown), or a regular file with one link.

    * a regular file with ``st_nlink > 1`` is a hard link: its other name may be a file the
      caller must never give away (a planted link to /etc/shadow in a vault; Linux's
      ``protected_hardlinks`` only stops *creating* such links, and not for root): EPERM;
    * a device node, fifo or socket is never a store directory, and chmod of a device node
      would open a device to the world: EPERM.
    """
    mode = st.st_mode
    if stat_mod.S_ISDIR(mode) or stat_mod.S_ISLNK(mode):
        return
    if stat_mod.S_ISREG(mode):
        if st.st_nlink == 1:
            return
        raise OSError(errno.EPERM, f"a hard link (link count {st.st_nlink}): not trusted for "
                      "ownership or mode changes", path)
    raise OSError(errno.EPERM, "a device node, fifo or socket: ownership and mode are never "
                  "changed through safe access", path)

