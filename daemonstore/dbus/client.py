"""Asyncio client of the simulated cryptohome and session manager (D-Bus client side).

What ``daemonstore login``/``logout``, the test fixtures and the demo use. Calls are plain
messages to fixed names (no introspection round trip), so an unprivileged caller needs nothing
but the methods the policy grants it. D-Bus errors surface as :class:`CallError` carrying the
error name and text, so callers never import dbus_fast.

Sign-in and sign-out follow chromeos-facts.md §4: Chrome mounts the cryptohome *before*
``StartSession`` (which emits ``started``); at sign-out ``stopping`` and ``stopped`` come *before*
cryptohome unmounts (ui-post-stop runs ``cryptohome --action=unmount`` afterwards).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from daemonstore.dbus import names
from daemonstore.errors import DaemonStoreError

#: no call of ours should take long; a hung service must not hang the CLI forever
CALL_TIMEOUT = 25.0


class ClientError(DaemonStoreError):
    """Base of the errors a client raises; ``str()`` is a one-line reason."""


class BusUnavailable(ClientError):
    """No connection to the bus at the given address."""


class CallError(ClientError):
    """The service (or the bus) answered with a D-Bus error."""

    def __init__(self, method: str, error_name: str, text: str) -> None:
        super().__init__(f"{method}: {error_name}: {text}")
        self.method = method
        self.error_name = error_name
        self.text = text


@dataclass(frozen=True)
class LoginResult:
    username: str
    user_hash: str
    mounted: list[str]


@dataclass(frozen=True)
class LogoutResult:
    username: str
    unmounted: list[str]
    #: False when the user had a mounted vault but no session to stop
    had_session: bool


class Client:
    """One connection to a bus; methods call the cryptohome / session manager services."""

    def __init__(self, bus: MessageBus, address: str) -> None:
        self._bus = bus
        self.address = address

    @classmethod
    async def connect(cls, address: str) -> Client:
        """Connect to ``address`` (always explicit: never the machine's own system bus)."""
        if not address:
            raise BusUnavailable("no bus address given")
        bus = MessageBus(bus_address=address, bus_type=BusType.SYSTEM)
        try:
            await asyncio.wait_for(bus.connect(), CALL_TIMEOUT)
        except Exception as exc:  # OSError, AuthError, InvalidAddressError, TimeoutError, ...
            raise BusUnavailable(f"cannot connect to the bus at {address}: "
                                 f"{type(exc).__name__}: {exc}") from None
        return cls(bus, address)

    async def close(self) -> None:
        if self._bus.connected:
            self._bus.disconnect()
            await self._bus.wait_for_disconnect()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def unique_name(self) -> str | None:
        return self._bus.unique_name

    # ---- raw call ----------------------------------------------------------------------------
    async def call(self, destination: str, path: str, interface: str, member: str,
                   signature: str = "", body: list[Any] | None = None) -> list[Any]:
        """Call one method; return the reply body or raise :class:`CallError`."""
        msg = Message(destination=destination, path=path, interface=interface, member=member,
                      signature=signature, body=body or [])
        try:
            reply = await asyncio.wait_for(self._bus.call(msg), CALL_TIMEOUT)
        except TimeoutError:
            raise CallError(member, "org.freedesktop.DBus.Error.Timeout",
                            f"no reply within {CALL_TIMEOUT:.0f}s") from None
        except (OSError, EOFError) as exc:
            raise BusUnavailable(f"{member}: connection to the bus lost: {exc}") from None
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise CallError(member, reply.error_name or "unknown", text)
        return list(reply.body)

    async def _cryptohome(self, interface: str, member: str, signature: str = "",
                          *args: Any) -> list[Any]:
        return await self.call(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH, interface, member,
                               signature, list(args))

    async def _session(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        return await self.call(names.SESSION_NAME, names.SESSION_PATH, names.SESSION_IFACE,
                               member, signature, list(args))

    # ---- cryptohome --------------------------------------------------------------------------
    async def sanitized_username(self, username: str) -> str:
        (value,) = await self._cryptohome(names.MISC_IFACE, "GetSanitizedUsername", "s",
                                          username)
        return value

    async def system_salt(self) -> bytes:
        (value,) = await self._cryptohome(names.MISC_IFACE, "GetSystemSalt")
        return bytes(value)

    async def mount(self, username: str, guest: bool = False) -> tuple[str, list[str]]:
        user_hash, mounted = await self._cryptohome(names.MOUNT_IFACE, "MountEx", "sb",
                                                    username, guest)
        return user_hash, list(mounted)

    async def unmount(self, username: str) -> list[str]:
        (unmounted,) = await self._cryptohome(names.MOUNT_IFACE, "Unmount", "s", username)
        return list(unmounted)

    async def list_mounted(self) -> list[str]:
        (hashes,) = await self._cryptohome(names.MOUNT_IFACE, "ListMounted")
        return list(hashes)

    # ---- session manager ---------------------------------------------------------------------
    async def start_session(self, username: str) -> None:
        await self._session("StartSession", "s", username)

    async def stop_session(self, username: str = "") -> None:
        await self._session("StopSession", "s", username)

    async def session_state(self) -> str:
        (state,) = await self._session("RetrieveSessionState")
        return state

    async def primary_session(self) -> tuple[str, str]:
        username, user_hash = await self._session("RetrievePrimarySession")
        return username, user_hash

    async def active_sessions(self) -> dict[str, str]:
        (sessions,) = await self._session("RetrieveActiveSessions")
        return dict(sessions)

    async def is_guest_session_active(self) -> bool:
        (active,) = await self._session("IsGuestSessionActive")
        return bool(active)

    # ---- the two flows -----------------------------------------------------------------------
    async def login(self, username: str, guest: bool = False) -> LoginResult:
        """Sign in as Chrome does: cryptohome ``MountEx``, then ``StartSession`` (``started``).

        If ``StartSession`` fails the vault is unmounted again, so a failed login leaves nothing
        mounted; the :class:`CallError` of ``StartSession`` is raised.
        """
        user_hash, mounted = await self.mount(username, guest)
        try:
            await self.start_session(username)
        except CallError:
            try:
                await self.unmount(username)
            except ClientError:
                pass  # the StartSession error is the one worth reporting
            raise
        return LoginResult(username, user_hash, mounted)

    async def logout(self, username: str) -> LogoutResult:
        """Sign out as ui-post-stop does: ``StopSession`` (``stopping``, ``stopped``), then
        cryptohome ``Unmount``. A user with a vault but no session is still unmounted."""
        had_session = True
        try:
            await self.stop_session(username)
        except CallError as exc:
            if exc.error_name != f"{names.SESSION_ERROR}.SessionDoesNotExist":
                raise
            had_session = False
        unmounted = await self.unmount(username)
        return LogoutResult(username, unmounted, had_session)

    # ---- signals -----------------------------------------------------------------------------
    @asynccontextmanager
    async def session_states(self) -> AsyncIterator[asyncio.Queue[str]]:
        """Subscribe to ``SessionStateChanged`` from the session manager's name; yields a queue
        that receives each state in order. Matching on the sender matters: anyone may send a
        signal on the bus, but only root may own ``org.chromium.SessionManager``."""
        rule = (f"type='signal',sender='{names.SESSION_NAME}',path='{names.SESSION_PATH}',"
                f"interface='{names.SESSION_IFACE}',member='{names.SESSION_SIGNAL}'")
        owner = await self._name_owner(names.SESSION_NAME)
        queue: asyncio.Queue[str] = asyncio.Queue()

        def handler(msg: Message) -> None:
            if (msg.message_type is MessageType.SIGNAL and msg.member == names.SESSION_SIGNAL
                    and msg.interface == names.SESSION_IFACE and msg.sender == owner
                    and msg.signature == "s"):
                queue.put_nowait(msg.body[0])

        await self._bus_call("AddMatch", rule)
        self._bus.add_message_handler(handler)
        try:
            yield queue
        finally:
            self._bus.remove_message_handler(handler)
            if self._bus.connected:
                await self._bus_call("RemoveMatch", rule)

    @asynccontextmanager
    async def name_owner_changes(self, name: str) -> AsyncIterator[asyncio.Queue[str]]:
        """Subscribe to the bus's ``NameOwnerChanged`` for ``name``; yields a queue that gets
        each new owner's unique name ("" when the name is released)."""
        rule = ("type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                f"interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{name}'")
        queue: asyncio.Queue[str] = asyncio.Queue()

        def handler(msg: Message) -> None:
            if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                    and msg.sender == "org.freedesktop.DBus" and msg.signature == "sss"
                    and msg.body[0] == name):
                queue.put_nowait(msg.body[2])

        await self._bus_call("AddMatch", rule)
        self._bus.add_message_handler(handler)
        try:
            yield queue
        finally:
            self._bus.remove_message_handler(handler)
            if self._bus.connected:
                await self._bus_call("RemoveMatch", rule)

    async def wait_closed(self) -> None:
        """Return when the connection to the bus is gone (shielded: cancelling the wait must
        not cancel the bus's own disconnect future, which close() awaits)."""
        await asyncio.shield(self._bus.wait_for_disconnect())

    async def _name_owner(self, name: str) -> str:
        (owner,) = await self._bus_call("GetNameOwner", name)
        return owner

    async def _bus_call(self, member: str, arg: str) -> list[Any]:
        return await self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", member, "s", [arg])

    # ---- test control (root only) ------------------------------------------------------------
    async def _control(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        return await self._cryptohome(names.CONTROL_IFACE, member, signature, *args)

    async def add_user(self, username: str) -> str:
        (user_hash,) = await self._control("AddUser", "s", username)
        return user_hash

    async def inject_failure(self, method: str, step: int) -> None:
        await self._control("InjectFailure", "si", method, step)

    async def clear_failures(self) -> None:
        await self._control("ClearFailures")

    async def get_calls(self) -> list[tuple[str, list[str]]]:
        (calls,) = await self._control("GetCalls")
        return [(method, list(args)) for method, args in calls]

    async def clear_calls(self) -> None:
        await self._control("ClearCalls")

    async def install_daemon(self, name: str, uid: int, gid: int, mode: int) -> list[str]:
        (done,) = await self._control("InstallDaemon", "suuu", name, uid, gid, mode)
        return list(done)

    async def mountinfo(self, namespace: str = "") -> str:
        (text,) = await self._control("GetMountinfo", "s", namespace)
        return text
