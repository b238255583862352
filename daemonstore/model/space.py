"""Space accounting of the model's filesystems, for ``statvfs`` (pure: no os, no ctypes).

A model tmpfs has the capacity its mount data gives, parsed as mm/shmem.c parses it
(``shmem_parse_one``): ``size=`` through ``memparse`` (a number in C's base-0 notation, then an
optional K/M/G/T/P/E suffix, binary), or ``N%`` of RAM; ``nr_blocks=`` in pages; the last option
wins; no option is half of RAM (``shmem_default_max_blocks``); ``size=0`` is unlimited, which
``statfs`` reports as 0 blocks. Usage counts what tmpfs charges: the pages of each regular file's
data, and one page for a symlink target too long to be stored inline (``SHORT_SYMLINK_LEN``).
Directories, fifos and short symlinks cost no blocks.

Not modelled: ENOSPC. A write beyond the capacity succeeds in the model; ``statvfs`` then
reports 0 free (the kernel refuses the write instead).
"""

from __future__ import annotations

import re

from daemonstore.model.fs import FILE, SYMLINK, Dentry, Filesystem

PAGE_SIZE = 4096
SHORT_SYMLINK_LEN = 128  # mm/shmem.c: shorter targets live in the inode
_SUFFIX = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([kKmMgGtTpPeE]?)(%?)\Z")


def _pages(nbytes: int) -> int:
    return -(-nbytes // PAGE_SIZE)


def memparse(text: str, *, percent_of: int | None = None) -> int:
    """``memparse()`` of a tmpfs option value in bytes; ``N%`` needs ``percent_of``.
    ValueError for what the kernel rejects with EINVAL."""
    match = _NUMBER.match(text)
    if not match or (match.group(3) and percent_of is None):
        raise ValueError(f"tmpfs size {text!r} is not a number with an optional "
                         "K/M/G/T/P/E suffix")
    value = int(match.group(1), 0) << _SUFFIX.get(match.group(2).lower(), 0)
    if match.group(3):
        assert percent_of is not None
        value = value * percent_of // 100
    return value


def capacity_pages(fs: Filesystem, memory_bytes: int) -> int:
    """``max_blocks`` of a tmpfs superblock (0: unlimited)."""
    pages = _pages(memory_bytes) // 2  # shmem_default_max_blocks()
    for option in fs.data.split(","):
        key, _, value = option.partition("=")
        try:
            if key == "size":
                pages = _pages(memparse(value, percent_of=memory_bytes))
            elif key == "nr_blocks":
                pages = memparse(value)
        except ValueError as exc:
            raise NotImplementedError(f"tmpfs {fs.source}: {exc} (the kernel refuses such a "
                                      "mount with EINVAL; the model took it)") from None
    return pages


def used_pages(root: Dentry) -> int:
    """Pages a tmpfs charges for the tree below ``root`` (its ``used_blocks``)."""
    used = 0
    pending = [root]
    while pending:
        d = pending.pop()
        if d.kind == FILE:
            used += _pages(len(d.data))
        elif d.kind == SYMLINK and len(d.target.encode()) >= SHORT_SYMLINK_LEN:
            used += 1
        pending.extend(d.children.values())
    return used


def statvfs(fs: Filesystem, memory_bytes: int) -> tuple[int, int]:
    """``(f_blocks * f_frsize, f_bavail * f_frsize)`` of a model filesystem (``shmem_statfs``:
    an unlimited tmpfs, like any filesystem without blocks, reports zeros)."""
    if fs.fstype != "tmpfs":
        return 0, 0
    total = capacity_pages(fs, memory_bytes)
    if total == 0:
        return 0, 0
    free = max(total - used_pages(fs.root), 0)
    return total * PAGE_SIZE, free * PAGE_SIZE
