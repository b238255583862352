"""Mount-change notification in the model (Host.watch_mounts): the stand-in for the kernel's
``POLLPRI`` on ``/proc/PID/mountinfo``, pure (no os, no asyncio).

Each mount operation of a :class:`~daemonstore.model.world.ModelHost` (those decorated with
:func:`changes_mounts`) calls every watcher once it is over, whether it succeeded or not, and
whichever namespace it changed: a call may be spurious, a change is never missed. Watchers run
synchronously, inside the caller of the operation, after the tables are consistent again; a
daemon client's watcher only sets an asyncio event.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class MountWatchers:
    """Mixin for ModelHost: ``watch_mounts`` and the calls after each mount operation."""

    _watchers: dict[int, Callable[[], None]]
    _next_watch: int

    def watch_mounts(self, notify: Callable[[], None]) -> Callable[[], None]:
        """Call ``notify()`` after each mount operation of this host; returns the function that
        stops it (calling that twice is harmless)."""
        key = self._next_watch
        self._next_watch += 1
        self._watchers[key] = notify

        def stop() -> None:
            self._watchers.pop(key, None)

        return stop

    def _mounts_changed(self) -> None:
        if self._watchers:
            for notify in list(self._watchers.values()):  # a watcher may stop itself meanwhile
                notify()


def changes_mounts(method: F) -> F:
    """Decorate a ModelHost method that may change a mount table: watchers run after it."""

    @functools.wraps(method)
    def wrapper(self: MountWatchers, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._mounts_changed()

    return wrapper  # type: ignore[return-value]
