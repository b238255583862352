"""Plan steps the scenario language lacks (pure records; they touch only the Host they are given).

Components build their plans as lists of :class:`daemonstore.ops.scenario.Op` (style.md habit 1).
The scenario language (design.md, contract) has no ``mkdir`` with a mode, no ``chmod`` and no
``chown``, and its ``Bind``/``Make`` call the Host without ``safe``. This module adds:

* :class:`MakeDir`  ``mkdir -m 0755 P``   one directory, mode applied exactly, EEXIST if present
* :class:`Chmod`    ``chmod 0755 P``
* :class:`Chown`    ``chown 0:0 P``
* :class:`SafeBind` / :class:`SafeMake`: the scenario ``Bind`` / ``Make`` with ``safe=True``;
  they render exactly like their parents, so a dry run of mount steps is valid scenario text.

Every op here passes ``safe=True`` to the Host by default: no symlink may appear in any
component of the path, the last one included (``RESOLVE_NO_SYMLINKS``, ``ELOOP`` otherwise;
host.py), so ``chmod``/``chown`` of a symlink is ``ELOOP`` rather than Linux's ``EOPNOTSUPP``
(no lchmod) or a silent lchown. On the kernel
the operation then acts on the fd that resolution returned, so a symlink planted at
``/run/daemon-store/<d>`` can never redirect a mount, chmod or chown (chromeos-facts.md §1: the
original enumerates with ``stat()`` and would follow one).

``to_line()`` renders shell-like lines for dry runs and error messages; they are *not* part of
the scenario language (``scenario.parse`` refuses ``chmod``), only :class:`SafeBind` and
:class:`SafeMake` lines are.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from daemonstore.host import Host
from daemonstore.ops.scenario import Bind, Make, Op

__all__ = ["Chmod", "Chown", "MakeDir", "SafeBind", "SafeMake"]


def _q(word: str) -> str:
    return shlex.quote(word)


@dataclass(frozen=True)
class MakeDir(Op):
    """``mkdir -m MODE P``: create one directory (parents must exist), mode exact (no umask).

    Unlike the scenario's ``Mkdir`` (``mkdir -p``) this fails with ``EEXIST`` when ``P`` exists:
    a plan only creates what it saw missing, and something appearing in between is news.
    """

    path: str
    mode: int = 0o755
    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.mkdir(self.path, self.mode, safe=self.safe)

    def to_line(self) -> str:
        return f"mkdir -m {self.mode:04o} {_q(self.path)}"


@dataclass(frozen=True)
class Chmod(Op):
    """``chmod MODE P`` (``fchmodat``; the mode replaces all 12 permission bits)."""

    path: str
    mode: int
    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.chmod(self.path, self.mode, safe=self.safe)

    def to_line(self) -> str:
        return f"chmod {self.mode:04o} {_q(self.path)}"


@dataclass(frozen=True)
class Chown(Op):
    """``chown UID:GID P`` (numeric ids; ``-1`` leaves that id unchanged, as fchownat(2))."""

    path: str
    uid: int
    gid: int
    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.chown(self.path, self.uid, self.gid, safe=self.safe)

    def to_line(self) -> str:
        uid = "" if self.uid == -1 else str(self.uid)
        gid = "" if self.gid == -1 else str(self.gid)
        return f"chown {uid}:{gid} {_q(self.path)}"


@dataclass(frozen=True)
class SafeBind(Bind):
    """``mount --bind S D`` resolved without following symlinks in either path."""

    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.bind(self.source, self.target, recursive=self.recursive, safe=self.safe)


@dataclass(frozen=True)
class SafeMake(Make):
    """``mount --make-shared P`` (etc.) resolved without following symlinks."""

    safe: bool = field(default=True, kw_only=True)

    def apply(self, host: Host) -> None:
        host.make(self.target, self.propagation, recursive=self.recursive, safe=self.safe)
