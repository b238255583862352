"""What wakes a waiting daemon client (daemon/client.py), merged into one asyncio event: the
session manager's ``SessionStateChanged`` and ``NameOwnerChanged`` (who is signed in may have
changed: ask the bus again) and a change of the mount table the daemon sees (its store may have
come or gone: look again). Nothing here polls or sleeps (issue 16).

A connection to the bus that goes wakes the waiter too, which then raises
:class:`~daemonstore.dbus.client.BusUnavailable` (nothing would ever wake it again).

The mount source is a ``watch(notify) -> stop`` function: ``Host.watch_mounts`` (the model, a
KernelHost, a NamespaceView) or :func:`daemonstore.kernel.local.watch_mount_table` (the
process's own ``/proc/self/mountinfo``, ``POLLPRI``).

The waiting pattern, with no lost wake-up (everything is subscribed before the first look, and
the event is cleared *before* each look, so a change during the look wakes the next wait)::

    async with wakeups(bus, watch) as wake:
        while True:
            if wake.begin():            # clears the event; True: a session signal came
                user = await ask_the_bus()
            if ready(user):
                return ...
            await wake.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from daemonstore.dbus import names
from daemonstore.dbus.client import BusUnavailable, Client

#: ``watch(notify)`` starts calling ``notify()`` on mount changes and returns ``stop()``
Watch = Callable[[Callable[[], None]], Callable[[], None]]


class Wakeups:
    """One event, set by any source; :meth:`begin` also says whether the bus must be asked."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._ask = True  # the first look always asks
        self._lost = False
        self._event.set()

    def bus_lost(self) -> None:
        self._lost = True
        self._event.set()

    def mounts_changed(self) -> None:
        self._event.set()

    def session_changed(self, _item: object = None) -> None:
        self._ask = True
        self._event.set()

    def begin(self) -> bool:
        """Start a look: clear the event; True when a session signal came since the last.
        :class:`~daemonstore.dbus.client.BusUnavailable` once the connection is gone: nothing
        would ever wake the waiter again."""
        if self._lost:
            raise BusUnavailable("the connection to the bus was lost while waiting")
        self._event.clear()
        ask, self._ask = self._ask, False
        return ask

    async def wait(self) -> None:
        """Until the next change of any source (at once if one came since :meth:`begin`)."""
        await self._event.wait()


@asynccontextmanager
async def wakeups(bus: Client | None, watch: Watch) -> AsyncIterator[Wakeups]:
    """Subscribe to every source (the bus's only if ``bus`` is given), yield the
    :class:`Wakeups`, unsubscribe on the way out (also when cancelled)."""
    wake = Wakeups()
    async with contextlib.AsyncExitStack() as stack:
        if bus is not None:
            states = await stack.enter_async_context(bus.session_states())
            owners = await stack.enter_async_context(bus.name_owner_changes(names.SESSION_NAME))
            for queue in (states, owners):
                task = asyncio.create_task(_pump(queue, wake.session_changed))
                stack.push_async_callback(stop_task, task)
            task = asyncio.create_task(_watch_connection(bus, wake))
            stack.push_async_callback(stop_task, task)
        stack.callback(watch(wake.mounts_changed))
        yield wake


async def _pump(queue: asyncio.Queue[Any], call: Callable[[Any], None]) -> None:
    while True:
        call(await queue.get())


async def _watch_connection(bus: Client, wake: Wakeups) -> None:
    try:
        await bus.wait_closed()
    except Exception:  # noqa: BLE001 - a connection that died of an error is lost all the same
        pass
    wake.bus_lost()


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it is over, without swallowing a cancel of the caller:
    ``asyncio.wait`` never raises the task's CancelledError, only the caller's own (a
    ``try: await task / except CancelledError: pass`` would eat both)."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: a task that failed on its own was reported already
