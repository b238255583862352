"""Kernel layer, reads only: :class:`ReadOnlyRoot`, the Host interface's read methods over a
directory tree of the real filesystem (no mount, no write, so no private namespace is needed).

``daemonstore path`` only has to read the salt below ``--root``; a :class:`KernelHost` would
refuse the machine's own ``/`` (it mounts, so it must live in a sandbox). :class:`ReadOnlyRoot`
resolves every path with ``openat2(RESOLVE_IN_ROOT)`` below its root, exactly as KernelHost does
(host.py "Paths"), so a symlink planted under the root can never lead outside it; ``safe=True``
refuses symlinks altogether (``ELOOP``).
"""

from __future__ import annotations

import os

from daemonstore.kernel.syscalls import openat2, read_all
from daemonstore.kernel.uapi import (
    O_CLOEXEC,
    O_DIRECTORY,
    O_NOFOLLOW,
    O_PATH,
    RESOLVE_IN_ROOT,
    RESOLVE_SAFE,
)

__all__ = ["ReadOnlyRoot"]


class ReadOnlyRoot:
    """``read_file``, ``stat`` and ``exists`` of the Host interface, confined to ``root``."""

    kind = "kernel"

    def __init__(self, root: str) -> None:
        self._fd = os.open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ReadOnlyRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, path: str, flags: int, *, safe: bool) -> int:
        resolve = RESOLVE_SAFE if safe else RESOLVE_IN_ROOT
        return openat2(self._fd, path.lstrip("/") or ".", flags | O_CLOEXEC, 0, resolve,
                       filename=path)

    def read_file(self, path: str, *, safe: bool = False) -> bytes:
        # O_NONBLOCK: a fifo planted at the path reads as empty instead of hanging
        fd = self._open(path, os.O_RDONLY | os.O_NONBLOCK, safe=safe)
        try:
            return read_all(fd)
        finally:
            os.close(fd)

    def stat(self, path: str, *, safe: bool = False) -> os.stat_result:
        """``lstat``: the last component is never followed (nor any, with ``safe``)."""
        fd = self._open(path, O_PATH | O_NOFOLLOW, safe=safe)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        try:
            os.close(self._open(path, O_PATH | O_NOFOLLOW, safe=False))
        except OSError:
            return False
        return True
