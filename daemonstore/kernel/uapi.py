"""Kernel layer, vocabulary: the ``include/uapi`` constants the kernel backend passes to the kernel
(plain numbers, no ctypes). The ``MS_*`` mount flags are not here: they are
:data:`daemonstore.mountflags.MS_FLAGS`, the one table the kernel, the jail and the audit share.
Only what some caller passes is declared.
"""

from __future__ import annotations

import os

# ---- include/uapi/linux/mount.h: umount2(2) flags ----------------------------------------------

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# ---- include/uapi/linux/mount.h: open_tree(2), move_mount(2), mount_setattr(2) -----------------

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x01

# ---- include/uapi/linux/sched.h, nsfs.h ----------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_FS = 0x00000200  # unshare(2): a private root, cwd and umask for this thread
NS_GET_NSTYPE = 0xB703  # _IO(NSIO, 0x3): the CLONE_NEW* type of an nsfs fd

# ---- include/uapi/linux/openat2.h --------------------------------------------------------------

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
#: the Host interface's ``safe=True`` (host.py): confined to the root and no symlink followed
RESOLVE_SAFE = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
OPEN_HOW_SIZE_VER0 = 24

# ---- include/uapi/linux/fcntl.h ------------------------------------------------------------------

# the O_* values differ between architectures (O_DIRECTORY is 0o200000 on x86_64, 0o40000 on
# aarch64), so they come from Python's own build rather than from one arch's header
O_PATH = os.O_PATH
O_DIRECTORY = os.O_DIRECTORY
O_NOFOLLOW = os.O_NOFOLLOW
O_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# ---- include/uapi/linux/stat.h: statx(2) -------------------------------------------------------

STATX_MNT_ID = 0x1000
#: what Stat holds: STATX_TYPE|MODE|NLINK|UID|GID|INO|SIZE, plus the mount id (Linux 5.8+)
STATX_WANTED = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x100 | 0x200 | STATX_MNT_ID
STATX_SIZE = 256  # sizeof(struct statx)

# ---- include/uapi/linux/prctl.h ----------------------------------------------------------------

PR_SET_NO_NEW_PRIVS = 38

# ---- include/uapi/linux/loop.h -------------------------------------------------------------------

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8+: LOOP_SET_FD + LOOP_SET_STATUS64 in one call, no race
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4  # detach when the last opener (e.g. the mounted filesystem) goes
LO_NAME_SIZE = 64
LO_KEY_SIZE = 32
