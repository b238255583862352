"""One thread for all of a service's Host work (vocabulary, tier 0): :class:`HostLane` and
:func:`lane_for`.

Why: cryptohome-sim and the session hook serve D-Bus from one asyncio loop, and a sign-in with
10,000 templates took that loop about 7.5 s (SECURITY.md, "Service loop"); every other caller
-- a cheap ``GetSanitizedUsername``, an introspection, a signal -- waited behind it. So the
services hand Host work to a *lane*: one worker thread per Host, running the jobs one at a
time in the order they were given. The loop stays free, and Host access stays serialized --
one thread, so the model (which is not thread-safe) and the kernel host's per-process
namespace bookkeeping are only ever touched by it. Everything a service does to the Host goes
through the lane; whatever needs no Host (the salt once read, session state) is answered on
the loop at once.

A Host may offer ``own_thread()``: the lane calls it first in its thread. The kernel host
unshares ``CLONE_FS`` there, since ``setns(CLONE_NEWNS)`` refuses (EINVAL) a thread that
shares its filesystem context with another, and every Python thread does.

Two services on the same Host object in one process (tests run cryptohome-sim and the hook
side by side on one ModelHost) get the same lane from :func:`lane_for`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["HostLane", "lane_for"]

T = TypeVar("T")


class HostLane:
    """A single worker thread doing one Host's jobs in order (module doc)."""

    def __init__(self, host: object) -> None:
        self._own_thread: Callable[[], object] | None = getattr(host, "own_thread", None)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="host-lane", initializer=self._start)
        self.thread: threading.Thread | None = None

    def _start(self) -> None:
        self.thread = threading.current_thread()
        if callable(self._own_thread):
            self._own_thread()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the lane, awaited without blocking the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``fn(*args)`` in the lane, from any thread that is not the lane's, blocking."""
        if threading.current_thread() is self.thread:
            return fn(*args)  # already in the lane: a nested job would wait for itself
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


_LANES: weakref.WeakKeyDictionary[Any, HostLane] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def lane_for(host: object) -> HostLane:
    """The lane of ``host`` (made on first use; one per Host object, for as long as it
    lives)."""
    with _LOCK:
        lane = _LANES.get(host)
        if lane is None:
            lane = _LANES[host] = HostLane(host)
        return lane
