"""Fault injection at the Host boundary: :class:`FaultHost` wraps any Host (model or kernel) and
fails -- or SIGKILLs its own process -- just before the N-th call that changes something.

Sign-in has its own ``fail_at`` (an EIO before plan step N, followed by the rollback). This is
the lower, blunter tool the hardening suite needs (SECURITY.md, "daemonstore repair"): it works
unchanged for startup, sign-in, sign-out and repair, and counts *system calls*, not plan steps, so a
SIGKILL can land between the bind of a store and its remount, which no plan-level hook can
reach. The kill point is exact and reproducible: the same state and the same ``at`` always stop
at the same call.

``at`` is 0-based over the calls named in ``calls`` (default :data:`MUTATING`: every Host method
that changes the mount table or the filesystem). Reads (stat, listdir, mountinfo ...) pass
through uncounted. The ``action``:

* ``"raise"``: ``OSError(err)`` instead of call ``at`` (the call is not made); later calls work,
  so the caller's rollback runs -- an ordinary failed step;
* ``"crash"``: call ``at`` and *every later one* fail: the rollback cannot change anything, so
  the host is left exactly as a crash at that point would leave it. This is how the model
  (which has no process to kill) is crashed;
* ``"kill"``: flush stdout/stderr and SIGKILL ``os.getpid()`` -- use it only in a forked child
  made for that purpose, never in a test runner's own process.

Layer: a testing tool in the library (like :mod:`daemonstore.testing`); no ctypes.
"""

from __future__ import annotations

import errno as errno_mod
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from daemonstore.host import make_store_by_steps, make_stores_by_calls

__all__ = ["MUTATING", "FaultHost", "count_calls"]

#: Host methods that change something (mounts, namespaces' trees, files)
MUTATING = frozenset({
    "mount_tmpfs", "bind", "move", "make", "umount", "remount_bind", "clone_detached",
    "attach_detached", "pin_namespace", "mkdir", "chown", "chmod", "write_file", "symlink",
    "unlink", "rmdir", "mkfifo",
})
#: the subset that are mount(2)/umount2(2)-like system calls
MOUNT_CALLS = frozenset({"mount_tmpfs", "bind", "move", "make", "umount", "remount_bind",
                         "attach_detached", "pin_namespace"})

ACTIONS = ("raise", "crash", "kill")


class FaultHost:
    """A Host that behaves like ``host`` until call number ``at`` of ``calls`` (see the module
    docstring). ``log`` records every counted call as ``(index, method, first argument)``;
    ``fired`` tells whether the fault happened."""

    def __init__(self, host: Any, *, at: int | None = None, action: str = "raise",
                 err: int = errno_mod.EIO, calls: Iterable[str] = MUTATING) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if at is not None and at < 0:
            raise ValueError(f"at must be a call index >= 0, not {at}")
        self._host = host
        self.at = at
        self.action = action
        self.err = err
        self.calls = frozenset(calls)
        self.count = 0
        self.fired = False
        self.log: list[tuple[int, str, str]] = []

    @property
    def inner(self) -> Any:
        return self._host

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._host, name)
        if name not in self.calls or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            index = self.count
            self.count += 1
            first = str(args[0]) if args else ""
            self.log.append((index, name, first))
            if self.at is not None and (index == self.at
                                        or (self.action == "crash" and index > self.at)):
                self.fired = True
                if self.action == "kill":
                    _kill_self()
                what = "crashed host" if index > self.at else "injected failure"
                raise OSError(self.err, f"{what} before call {index} ({name})", first or None)
            return attr(*args, **kwargs)

        return counted

    def make_store(self, path: str, mode: int, uid: int, gid: int, *,
                   safe: bool = False) -> None:
        """Host.make_store as its four calls through this wrapper, each counted like a direct
        call: a fault lands between the bind of a store and its make-shared exactly as it did
        before startup fused them (the wrapped host's fused call would be one uncounted
        call)."""
        make_store_by_steps(self, path, mode, uid, gid, safe=safe)

    def make_stores(self, paths: Sequence[str], mode: int, uid: int, gid: int, *,
                    safe: bool = False) -> dict[int, OSError]:
        """Host.make_stores as one make_store per path through this wrapper (so each of the
        four steps of each store is counted, as above)."""
        return make_stores_by_calls(self, paths, mode, uid, gid, safe=safe)

    def __repr__(self) -> str:
        return f"FaultHost({self._host!r}, at={self.at}, action={self.action!r})"


def _kill_self() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def count_calls(host: Any, fn: Callable[[Any], object],
                calls: Iterable[str] = MUTATING) -> tuple[int, object]:
    """Run ``fn(FaultHost(host))`` without a fault; returns (counted calls, fn's result): the
    range of ``at`` worth trying for the same starting state."""
    probe = FaultHost(host, calls=calls)
    result = fn(probe)
    return probe.count, result
