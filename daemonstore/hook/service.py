"""``daemonstore hook`` as a service (component layer: the bus client and the converge pass):
signal-driven store binds (docs/architecture.md §8).

It converges (:func:`daemonstore.hook.converge.converge`) when it starts, on every
``SessionStateChanged`` ``started`` and ``stopped``, and when ``org.chromium.SessionManager``
changes owner (a restarted session manager: the subscription follows the new owner, whose
signals alone are trusted). Each time it asks ``RetrieveActiveSessions`` first: only users with
a session get binds (never a vault cryptohome is still mounting or already unmounting); when
there is no session manager, nobody does, and only the unbind half runs. A change of the mount table
(``/proc/self/mountinfo`` polls ``POLLPRI``) only triggers the *unbind* half: ui-post-stop
unmounts the vault after ``stopped`` (docs/chromeos.md §4.1), and binding while cryptohome is
half-way through a sign-in could race its own binds. Exit: SIGTERM/SIGINT (clean, 0) or the bus
connection lost (1).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from daemonstore.dbus import names
from daemonstore.dbus.client import Client, ClientError
from daemonstore.hook.converge import BIND, UNBIND, ConvergeReport, converge
from daemonstore.host import Host
from daemonstore.hostlane import lane_for

__all__ = ["HookService"]

#: a burst of mounts (a sign-out unmounting a dozen binds) is one event after this quiet time
SETTLE_SECONDS = 0.05


@dataclass
class HookService:
    """One hook on ``host`` (the namespace cryptohome mounts in), talking to ``client``."""

    host: Host
    client: Client
    log: Callable[[str], None]
    watch_mounts: bool = True

    def converge(self, why: str, sessions: set[str] | None,
                 kinds: tuple[str, ...] = (BIND, UNBIND)) -> ConvergeReport:
        """One pass of ``kinds`` for the users with a session (``None``: none known, so the
        unbind half only); each action logs one line, prefixed with ``why``."""
        if sessions is None:
            sessions, kinds = set(), (UNBIND,)
        return converge(self.host, lambda line: self.log(f"{why}: {line}"), kinds=kinds,
                        sessions=sessions)

    async def converge_in_lane(self, why: str, sessions: set[str] | None,
                               kinds: tuple[str, ...] = (BIND, UNBIND)) -> ConvergeReport:
        """:meth:`converge` in the Host's lane (daemonstore.hostlane): the loop keeps
        receiving signals and mount events while a large pass runs (SECURITY.md, "Service
        loop")."""
        return await lane_for(self.host).run(self.converge, why, sessions, kinds)

    async def run(self, stop: asyncio.Event,
                  ready: Callable[[], None] | None = None) -> int:
        """Serve until ``stop`` is set (0) or the bus connection is lost (1); ``ready`` is called
        once the signals are subscribed and the first pass is done."""
        events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        # Host.watch_mounts: POLLPRI on /proc/self/mountinfo on the kernel (kernel/local.py)
        stop_watch = (self.host.watch_mounts(lambda: events.put_nowait(("mounts", "")))
                      if self.watch_mounts else None)
        async with self.client.name_owner_changes(names.SESSION_NAME) as owners:
            forward = asyncio.ensure_future(_forward(owners, events, "owner"))
            states = await self._subscribe(events)
            await self.converge_in_lane("start", await self._sessions(log=False))
            if ready is not None:
                ready()
            closed = asyncio.ensure_future(self.client.wait_closed())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                while True:
                    got = asyncio.ensure_future(events.get())
                    done, _ = await asyncio.wait([got, closed, stopped],
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if got not in done:
                        got.cancel()
                        break
                    batch = [got.result()]
                    if batch[0][0] == "mounts":
                        await asyncio.sleep(SETTLE_SECONDS)
                    while not events.empty():
                        batch.append(events.get_nowait())
                    if any(kind == "owner" for kind, _ in batch):
                        states.cancel()
                        await _quietly(states)
                        states = await self._subscribe(events)
                    await self._handle(batch)
            finally:
                for task in (forward, states, closed, stopped):
                    task.cancel()
                    await _quietly(task)
                if stop_watch is not None:
                    stop_watch()
        return 0 if stop.is_set() else 1

    async def _handle(self, batch: list[tuple[str, str]]) -> None:
        owner = [value for kind, value in batch if kind == "owner"]
        states = [value for kind, value in batch if kind == "state"]
        if owner:
            who = owner[-1] or "nobody (released)"
            self.log(f"org.chromium.SessionManager is now owned by {who}")
            await self.converge_in_lane("owner changed", await self._sessions(log=False))
        elif names.STARTED in states or names.STOPPED in states:
            why = names.STARTED if names.STARTED in states else names.STOPPED
            await self.converge_in_lane(f"session {why}",
                                        await self._sessions(log=why == names.STARTED))
        elif any(kind == "mounts" for kind, _ in batch):
            await self.converge_in_lane("mounts changed", set(), kinds=(UNBIND,))

    async def _sessions(self, *, log: bool) -> set[str] | None:
        """The hashes of ``RetrieveActiveSessions`` (None when it cannot be asked), named in
        the log with ``log``."""
        try:
            sessions = await self.client.active_sessions()
        except ClientError as exc:
            self.log(f"RetrieveActiveSessions failed: {exc}")
            return None
        if log:
            shown = ", ".join(f"{u} ({h})" for u, h in sorted(sessions.items())) or "none"
            self.log(f"session started: active sessions: {shown}")
        return set(sessions.values())

    async def _subscribe(self, events: asyncio.Queue[tuple[str, str]]) -> asyncio.Future[None]:
        """SessionStateChanged from the session manager's current owner, forwarded to
        ``events``; a finished future when the name has no owner (yet)."""
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def subscription() -> None:
            try:
                async with self.client.session_states() as queue:
                    ready.set_result(True)
                    await _forward(queue, events, "state")
            except ClientError:
                if not ready.done():
                    ready.set_result(False)

        task = asyncio.ensure_future(subscription())
        if not await ready:
            self.log("org.chromium.SessionManager is not on the bus: waiting for it")
        return task


async def _forward(queue: asyncio.Queue[str], events: asyncio.Queue[tuple[str, str]],
                   kind: str) -> None:
    while True:
        events.put_nowait((kind, await queue.get()))


async def _quietly(task: asyncio.Future[object]) -> None:
    with contextlib.suppress(asyncio.CancelledError, ClientError):
        await task

