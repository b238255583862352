"""cryptohome-sim checks its callers itself (defence in depth behind the bus policy; issue 18,
finding 7; SECURITY.md, "Caller check").

For every method call reaching one of its connections, the service asks the bus for the
sender's uid (``org.freedesktop.DBus.GetConnectionUnixUser``), keeps it per unique name, and
drops it when that name goes away (``NameOwnerChanged`` with no new owner; the bus never reuses
a unique name, so the cache holds at most the peers connected now). Who may call what is the
table of :mod:`daemonstore.dbus.callers`, the one the shipped policy files are checked against.
A caller the table does not allow gets exactly what the bus gives when its policy refuses:
``org.freedesktop.DBus.Error.AccessDenied`` with dbus-daemon's "Rejected send message" text;
nothing of the method runs and nothing is logged.

dbus-fast's ``ServiceInterface`` methods never see the message, so the check is a message
handler on the connection, registered first: it answers from the cache at once; for a sender
not known yet it holds the call (and every later call of that sender, in order), asks the bus,
then re-dispatches each allowed call through the connection's own dispatch
(``MessageBus._process_message``, pinned at start by :func:`check_dispatch`), unchanged.

Who counts as root and who as chronos is a uid map (:class:`CallerIds`), like the policy's
``<policy user="...">``: a private bus of the tests or the demo names stand-ins (the user
running them, Debian's ``daemon``), and the service is given the same ones. Who has the daemon
role is read from the grant files the bus reads too (``daemonstore-<user>.conf``,
:mod:`daemonstore.dbus.grants`): :meth:`CallerIds.with_grants`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from dataclasses import dataclass

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from daemonstore.dbus import names
from daemonstore.dbus.callers import CHRONOS, DAEMON, ROOT, may_call
from daemonstore.dbus.grants import Grants, read_grants
from daemonstore.errors import DaemonStoreError

__all__ = ["CallerCheck", "CallerIds", "UnknownUser", "check_dispatch", "uid_of"]

_log = logging.getLogger("cryptohome_sim")

BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
#: every unique name leaving the bus (filtered to unique names in the handler)
NAME_OWNER_CHANGED = (f"type='signal',sender='{BUS_NAME}',interface='{BUS_NAME}',"
                      f"path='{BUS_PATH}',member='NameOwnerChanged'")


class UnknownUser(DaemonStoreError, ValueError):
    """A user named for a role that has no passwd entry (and is not a number)."""


def uid_of(user: str) -> int | None:
    """The uid of a user name or number, as dbus-daemon reads ``<policy user="...">``; None
    when there is no such user (dbus-daemon then ignores that policy block)."""
    if user.isdecimal():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


@dataclass(frozen=True)
class CallerIds:
    """Which uid is ``root`` and which ``chronos`` for the caller table (None: nobody is), and
    which uids have the daemon role."""

    root: int
    chronos: int | None
    daemons: frozenset[int] = frozenset()

    @classmethod
    def named(cls, root: str, chronos: str | None, *, strict: bool = False) -> CallerIds:
        """The uids of the users a policy names (a name or a number). A root that does not
        resolve, or with ``strict`` a chronos that does not, is :class:`UnknownUser`."""
        root_uid = uid_of(root)
        chronos_uid = uid_of(chronos) if chronos is not None else None
        if root_uid is None:
            raise UnknownUser(f"no user {root!r} for root's role (not in passwd, not a uid)")
        if strict and chronos is not None and chronos_uid is None:
            raise UnknownUser(f"no user {chronos!r} for chronos's role (not in passwd, "
                              "not a uid)")
        return cls(root_uid, chronos_uid)

    @classmethod
    def default(cls) -> CallerIds:
        """The service's own uid is root's role (on ChromeOS cryptohomed runs as root, the
        policy's owner; a test bus makes the user running it the owner), and the account
        ``chronos``, if there is one, is chronos."""
        return cls(os.geteuid(), uid_of("chronos"))

    def with_grants(self, grants: Grants | str | None) -> CallerIds:
        """These ids with the daemon role given to exactly the users ``grants`` names (a
        :class:`~daemonstore.dbus.grants.Grants`, or the directory to read it from; None: to
        nobody). A user without a passwd entry gets nothing, as dbus-daemon ignores its
        ``<policy user=...>``."""
        if isinstance(grants, str):
            grants = read_grants(grants)
        users = grants.users if grants is not None else ()
        uids = (uid_of(user) for user in users)
        return CallerIds(self.root, self.chronos,
                         frozenset(uid for uid in uids if uid is not None))

    def role_of(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        if uid == self.root:  # root's and chronos's grants include the daemon role's
            return ROOT
        if uid == self.chronos:
            return CHRONOS
        if uid in self.daemons:
            return DAEMON
        return None


def check_dispatch() -> None:
    """The re-dispatch needs dbus-fast's ``MessageBus._process_message`` (a cpdef method of
    the compiled bus): fail at start, not on the first caller, if a version lacks it."""
    if not callable(getattr(MessageBus, "_process_message", None)):
        raise RuntimeError("dbus-fast's MessageBus has no _process_message: the caller check "
                           "cannot re-dispatch a held call with this dbus-fast version")


def denial(msg: Message, owner: str, uid: int | None) -> Message:
    """The error dbus-daemon sends when its policy refuses a call (bus/bus.c,
    ``complain_about_message``), as far as the service knows the fields."""
    who = f"uid={uid}" if uid is not None else "uid=unknown"
    return Message.new_error(
        msg, names.ACCESS_DENIED,
        f'Rejected send message, 0 matched rules; type="method_call", sender="{msg.sender}" '
        f'({who}) interface="{msg.interface or "(unset)"}" member="{msg.member}" '
        f'error name="(unset)" requested_reply="0" destination="{owner}"')


class CallerCheck:
    """The caller check of one connection, which owns (or will own) the bus name ``owner``.

    Add :meth:`handle` as the connection's first message handler and call :meth:`subscribe`
    before owning the name."""

    def __init__(self, bus: MessageBus, owner: str, ids: CallerIds) -> None:
        self.bus = bus
        self.owner = owner
        self.ids = ids
        #: unique name -> uid, for the senders connected now
        self._uids: dict[str, int] = {}
        #: unique name -> its calls held while its uid is being asked for
        self._held: dict[str, list[Message]] = {}
        #: names that left while their uid was being asked for (not to be cached)
        self._gone: set[str] = set()
        #: the call being re-dispatched (already checked: let it through once)
        self._passing: Message | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def cached(self) -> dict[str, int]:
        """A copy of the cache: unique name -> uid."""
        return dict(self._uids)

    async def subscribe(self) -> None:
        """Ask the bus for ``NameOwnerChanged`` (how a unique name's departure is learnt)."""
        reply = await self.bus.call(Message(
            destination=BUS_NAME, path=BUS_PATH, interface=BUS_NAME, member="AddMatch",
            signature="s", body=[NAME_OWNER_CHANGED]))
        if reply is None or reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"the bus refused AddMatch for NameOwnerChanged: "
                               f"{reply.error_name if reply else 'no reply'}")

    def handle(self, msg: Message) -> Message | bool | None:
        """The message handler: None lets the message go on to dispatch, a Message is the
        reply sent instead, True holds it (answered once the sender's uid is known)."""
        if msg.message_type is MessageType.SIGNAL:
            self._maybe_gone(msg)
            return None
        if msg.message_type is not MessageType.METHOD_CALL:
            return None
        if msg is self._passing:
            return None
        sender = msg.sender
        if not sender:  # the bus always sets one; refuse what cannot be attributed
            return self._refuse(msg, None)
        if sender in self._held:
            self._held[sender].append(msg)
            return True
        if sender in self._uids:
            uid = self._uids[sender]
            if may_call(self.owner, self.ids.role_of(uid), msg.interface, msg.member):
                return None
            return self._refuse(msg, uid)
        self._held[sender] = [msg]
        task = asyncio.ensure_future(self._ask(sender))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _maybe_gone(self, msg: Message) -> None:
        if (msg.member != "NameOwnerChanged" or msg.sender != BUS_NAME
                or msg.interface != BUS_NAME or msg.signature != "sss"):
            return
        name, _old, new = msg.body
        if not name.startswith(":") or new:
            return
        self._uids.pop(name, None)
        if name in self._held:
            self._gone.add(name)

    def _refuse(self, msg: Message, uid: int | None) -> Message | bool:
        _log.info("refused %s.%s from %s (uid %s): not allowed by the caller table",
                  msg.interface, msg.member, msg.sender, uid)
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True  # handled; a caller that wants no reply gets none
        return denial(msg, self.owner, uid)

    async def _ask(self, sender: str) -> None:
        uid: int | None = None
        try:
            reply = await self.bus.call(Message(
                destination=BUS_NAME, path=BUS_PATH, interface=BUS_NAME,
                member="GetConnectionUnixUser", signature="s", body=[sender]))
            if reply is not None and reply.message_type is MessageType.METHOD_RETURN:
                uid = int(reply.body[0])
        except Exception:  # noqa: BLE001 - the bus went away: refuse what was held
            _log.debug("GetConnectionUnixUser(%s) failed", sender, exc_info=True)
        held = self._held.pop(sender, [])
        gone = sender in self._gone
        self._gone.discard(sender)
        if uid is not None and not gone:
            self._uids[sender] = uid
        role = self.ids.role_of(uid)
        for msg in held:  # in the order they came
            if not self.bus.connected:
                return
            if uid is not None and may_call(self.owner, role, msg.interface, msg.member):
                self._passing = msg
                try:
                    self.bus._process_message(msg)
                finally:
                    self._passing = None
            else:
                answer = self._refuse(msg, uid)
                if isinstance(answer, Message):
                    self.bus.send(answer)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
