"""Asyncio client of cryptohome and session_manager, speaking ChromeOS's wire API (docs/chromeos.md
§8): cryptohome methods are ``(ay) -> (ay)`` with ``user_data_auth`` protobufs, the session
manager's take and return plain D-Bus types.

What ``daemonstore login``/``logout``, ``daemonstore hook``, the daemon library, the test
fixtures and the demo use; it works against real ChromeOS services as against cryptohome-sim.
Calls are plain messages to fixed names (no introspection round trip), so a caller needs nothing
but the methods the policy grants it. A D-Bus error is :class:`CallError` (error name and text);
a cryptohome refusal (a reply whose ``error`` is set) is :class:`CryptohomeRefused` (the
``CryptohomeErrorCode``), so callers never import dbus_fast or the protobuf module.

Sign-in and sign-out follow Chrome (docs/chromeos.md §4, §8): ``StartAuthSession``, then
``CreatePersistentUser`` (new user) or ``AuthenticateAuthFactor``, ``PreparePersistentVault``,
then session_manager's ``StartSession`` (``started``); at sign-out ``StopSession`` ends every
session (``stopping``, ``stopped``) and cryptohome's ``Unmount`` unmounts everyone afterwards
(ui-post-stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from daemonstore import paths
from daemonstore.dbus import names
from daemonstore.dbus.proto import UserDataAuth_pb2 as uda
from daemonstore.errors import DaemonStoreError

#: no call of ours should take long; a hung service must not hang the CLI forever
CALL_TIMEOUT = 25.0
#: the system bus when ``$DBUS_SYSTEM_BUS_ADDRESS`` is unset (dbus's compiled-in default)
# the address rule lives with the names (re-exported here for the client's users)
SYSTEM_BUS_SOCKET = names.SYSTEM_BUS_SOCKET
ENV_BUS_ADDRESS = names.ENV_BUS_ADDRESS
system_bus_address = names.system_bus_address
R = TypeVar("R", bound=ProtoMessage)


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


class CryptohomeRefused(ClientError):
    """cryptohome replied with ``error`` set (a ``CryptohomeErrorCode``)."""

    def __init__(self, method: str, code: int) -> None:
        self.method = method
        self.code = code
        known = code in uda.CryptohomeErrorCode.values()
        self.code_name = uda.CryptohomeErrorCode.Name(code) if known else str(code)
        super().__init__(f"{method}: cryptohome refused: {self.code_name}")


@dataclass(frozen=True)
class LoginResult:
    username: str
    user_hash: str
    #: True when this sign-in created the account (CreatePersistentUser)
    created: bool = False


@dataclass(frozen=True)
class LogoutResult:
    #: False when no session was started (the vaults were still unmounted)
    had_session: bool



def _owner_rule(name: str) -> str:
    return ("type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{name}'")


def _is_owner_change(msg: Message, name: str) -> bool:
    return (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
            and msg.interface == "org.freedesktop.DBus" and msg.signature == "sss"
            and msg.body[0] == name)


class Client:
    """One connection to a bus; methods call cryptohome and the session manager."""

    def __init__(self, bus: MessageBus, address: str) -> None:
        self._bus = bus
        self.address = address

    @classmethod
    async def connect(cls, address: str) -> Client:
        """Connect to ``address`` (always explicit: the caller resolves the default)."""
        if not address:
            raise BusUnavailable("no bus address given")
        bus = MessageBus(bus_address=address, bus_type=BusType.SYSTEM)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that meets the
            # result, and a cancelled daemon must stop (issue 16)
            async with asyncio.timeout(CALL_TIMEOUT):
                await bus.connect()
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
            async with asyncio.timeout(CALL_TIMEOUT):  # never wait_for (connect() says why)
                reply = await self._bus.call(msg)
        except TimeoutError:
            raise CallError(member, "org.freedesktop.DBus.Error.Timeout",
                            f"no reply within {CALL_TIMEOUT:.0f}s") from None
        except (OSError, EOFError) as exc:
            raise BusUnavailable(f"{member}: connection to the bus lost: {exc}") from None
        if reply is None:
            raise BusUnavailable(f"{member}: no reply (the connection closed)")
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise CallError(member, reply.error_name or "unknown", text)
        return list(reply.body)

    async def cryptohome_call(self, interface: str, member: str, request: ProtoMessage,
                              reply_type: type[R]) -> R:
        """One ``(ay) -> (ay)`` cryptohome call; a reply with ``error`` set raises
        :class:`CryptohomeRefused`."""
        (data,) = await self.call(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH, interface,
                                  member, "ay", [request.SerializeToString()])
        reply = reply_type()
        try:
            reply.ParseFromString(bytes(data))
        except DecodeError as exc:
            raise CallError(member, "daemonstore.BadReply", f"not a "
                            f"{reply_type.DESCRIPTOR.full_name}: {exc}") from None
        code = getattr(reply, "error", 0)
        if code:
            raise CryptohomeRefused(member, code)
        return reply

    async def _uda(self, member: str, request: ProtoMessage, reply_type: type[R]) -> R:
        return await self.cryptohome_call(names.USERDATAAUTH_IFACE, member, request, reply_type)

    async def _session(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        return await self.call(names.SESSION_NAME, names.SESSION_PATH, names.SESSION_IFACE,
                               member, signature, list(args))

    # ---- cryptohome: CryptohomeMiscInterface -------------------------------------------------
    async def sanitized_username(self, username: str) -> str:
        reply = await self.cryptohome_call(
            names.MISC_IFACE, "GetSanitizedUsername",
            uda.GetSanitizedUsernameRequest(username=username), uda.GetSanitizedUsernameReply)
        return reply.sanitized_username

    async def system_salt(self) -> bytes:
        reply = await self.cryptohome_call(names.MISC_IFACE, "GetSystemSalt",
                                           uda.GetSystemSaltRequest(), uda.GetSystemSaltReply)
        return reply.salt

    # ---- cryptohome: UserDataAuthInterface ---------------------------------------------------
    async def start_auth_session(self, username: str, *,
                                 ephemeral: bool = False) -> tuple[bytes, bool]:
        """``(auth_session_id, user_exists)`` for a DECRYPT auth session."""
        request = uda.StartAuthSessionRequest(intent=uda.AUTH_INTENT_DECRYPT,
                                              is_ephemeral_user=ephemeral)
        request.account_id.account_id = username
        reply = await self._uda("StartAuthSession", request, uda.StartAuthSessionReply)
        return reply.auth_session_id, reply.user_exists

    async def invalidate_auth_session(self, sid: bytes) -> None:
        await self._uda("InvalidateAuthSession",
                        uda.InvalidateAuthSessionRequest(auth_session_id=sid),
                        uda.InvalidateAuthSessionReply)

    async def create_persistent_user(self, sid: bytes) -> str:
        reply = await self._uda("CreatePersistentUser",
                                uda.CreatePersistentUserRequest(auth_session_id=sid),
                                uda.CreatePersistentUserReply)
        return reply.sanitized_username

    async def authenticate_auth_factor(self, sid: bytes, label: str = "password",
                                       secret: bytes = b"") -> None:
        request = uda.AuthenticateAuthFactorRequest(auth_session_id=sid,
                                                    auth_factor_labels=[label])
        request.auth_input.password_input.secret = secret
        await self._uda("AuthenticateAuthFactor", request, uda.AuthenticateAuthFactorReply)

    async def prepare_persistent_vault(self, sid: bytes) -> str:
        reply = await self._uda("PreparePersistentVault",
                                uda.PreparePersistentVaultRequest(auth_session_id=sid),
                                uda.PreparePersistentVaultReply)
        return reply.sanitized_username

    async def prepare_ephemeral_vault(self, sid: bytes) -> str:
        reply = await self._uda("PrepareEphemeralVault",
                                uda.PrepareEphemeralVaultRequest(auth_session_id=sid),
                                uda.PrepareEphemeralVaultReply)
        return reply.sanitized_username

    async def prepare_guest_vault(self) -> str:
        reply = await self._uda("PrepareGuestVault", uda.PrepareGuestVaultRequest(),
                                uda.PrepareGuestVaultReply)
        return reply.sanitized_username

    async def unmount(self) -> None:
        """``Unmount(UnmountRequest{})``: every user."""
        await self._uda("Unmount", uda.UnmountRequest(), uda.UnmountReply)

    async def is_mounted(self, username: str = "") -> tuple[bool, bool]:
        """``(is_mounted, is_ephemeral_mount)`` of ``username``, or of anyone if empty."""
        reply = await self._uda("IsMounted", uda.IsMountedRequest(username=username),
                                uda.IsMountedReply)
        return reply.is_mounted, reply.is_ephemeral_mount

    async def remove(self, username: str) -> None:
        request = uda.RemoveRequest()
        request.identifier.account_id = username
        await self._uda("Remove", request, uda.RemoveReply)

    # ---- session manager ---------------------------------------------------------------------
    async def start_session(self, account_id: str, unique_identifier: str = "") -> None:
        await self._session("StartSession", "ss", account_id, unique_identifier)

    async def stop_session(self) -> None:
        """Ends every session (the argument ChromeOS takes is unused)."""
        await self._session("StopSession", "s", "")

    async def stop_session_with_reason(self, reason: int) -> None:
        await self._session("StopSessionWithReason", "u", reason)

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
    async def login(self, username: str, *, guest: bool = False,
                    ephemeral: bool = False) -> LoginResult:
        """Sign in as Chrome does, then ``StartSession`` (``started``).

        Regular: ``StartAuthSession`` -> ``CreatePersistentUser`` (first time) or
        ``AuthenticateAuthFactor`` -> ``PreparePersistentVault``. ``ephemeral``:
        ``StartAuthSession{is_ephemeral_user}`` -> ``PrepareEphemeralVault``. ``guest``:
        ``PrepareGuestVault`` (``username`` must be ``$guest``). If ``StartSession`` fails the
        vaults are unmounted again (``Unmount`` is everyone's, so only when nobody else is
        signed in) and its error is raised.
        """
        if guest and username != paths.GUEST_USER:
            raise ValueError(f"a guest signs in as {paths.GUEST_USER!r}, not {username!r}")
        created = False
        if guest:
            user_hash = await self.prepare_guest_vault()
        else:
            sid, exists = await self.start_auth_session(username, ephemeral=ephemeral)
            try:
                if ephemeral:
                    user_hash = await self.prepare_ephemeral_vault(sid)
                else:
                    if exists:
                        await self.authenticate_auth_factor(sid)
                    else:
                        await self.create_persistent_user(sid)
                        created = True
                    user_hash = await self.prepare_persistent_vault(sid)
            finally:
                await self.invalidate_auth_session(sid)
        others = await self.active_sessions()
        try:
            await self.start_session(username)
        except CallError:
            if not others:
                try:
                    await self.unmount()
                except ClientError:
                    pass  # the StartSession error is the one worth reporting
            raise
        return LoginResult(username, user_hash, created)

    async def logout(self) -> LogoutResult:
        """Sign everyone out as ui-post-stop does: ``StopSession`` (``stopping``, ``stopped``),
        then ``Unmount{}``. With no session started the vaults are still unmounted."""
        had_session = True
        try:
            await self.stop_session()
        except CallError as exc:
            if exc.error_name != f"{names.SESSION_ERROR}.SessionDoesNotExist":
                raise
            had_session = False
        await self.unmount()
        return LogoutResult(had_session)

    # ---- signals -----------------------------------------------------------------------------
    @asynccontextmanager
    async def _signals(self, name: str, path: str, interface: str, member: str,
                       signature: str, decode: Callable[[Any], Any]) -> AsyncIterator[Any]:
        """Subscribe to one signal of whoever owns ``name``. Matching on the sender matters:
        anyone may send a signal, but only root may own the ChromeOS names. The owner is
        followed through ``NameOwnerChanged`` (a restarted service, or one that comes up after
        the subscription), so no signal of the rightful owner is missed."""
        rules = [f"type='signal',sender='{name}',path='{path}',interface='{interface}',"
                 f"member='{member}'", _owner_rule(name)]
        owner = {"now": ""}
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def handler(msg: Message) -> None:
            if msg.message_type is not MessageType.SIGNAL:
                return
            if _is_owner_change(msg, name):
                owner["now"] = msg.body[2]
            elif (msg.member == member and msg.interface == interface and msg.path == path
                    and msg.sender == owner["now"] and owner["now"]
                    and msg.signature == signature):
                try:
                    queue.put_nowait(decode(msg.body[0]))
                except (DecodeError, ValueError):
                    pass  # a malformed signal from the owner is dropped, never raised here

        for rule in rules:
            await self._bus_call("AddMatch", "s", rule)
        self._bus.add_message_handler(handler)
        try:
            try:
                owner["now"] = owner["now"] or await self.name_owner(name)
            except CallError as exc:
                if not exc.error_name.endswith("NameHasNoOwner"):
                    raise
            yield queue
        finally:
            self._bus.remove_message_handler(handler)
            if self._bus.connected:
                for rule in rules:
                    await self._bus_call("RemoveMatch", "s", rule)

    def session_states(self) -> AbstractAsyncContextManager[asyncio.Queue[str]]:
        """``async with client.session_states() as queue``: each ``SessionStateChanged``
        state, in order."""
        return self._signals(names.SESSION_NAME, names.SESSION_PATH, names.SESSION_IFACE,
                             names.SESSION_SIGNAL, "s", str)

    def low_disk_space(self) -> AbstractAsyncContextManager[asyncio.Queue[int]]:
        """``async with client.low_disk_space() as queue``: ``disk_free_bytes`` of each
        ``LowDiskSpace`` signal."""

        def decode(data: Any) -> int:
            return uda.LowDiskSpace.FromString(bytes(data)).disk_free_bytes

        return self._signals(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH,
                             names.USERDATAAUTH_IFACE, names.LOW_DISK_SIGNAL, "ay", decode)

    @asynccontextmanager
    async def name_owner_changes(self, name: str) -> AsyncIterator[asyncio.Queue[str]]:
        """The bus's ``NameOwnerChanged`` for ``name``: a queue of new owners ("" = gone)."""
        rule = _owner_rule(name)
        queue: asyncio.Queue[str] = asyncio.Queue()

        def handler(msg: Message) -> None:
            if msg.message_type is MessageType.SIGNAL and _is_owner_change(msg, name):
                queue.put_nowait(msg.body[2])

        await self._bus_call("AddMatch", "s", rule)
        self._bus.add_message_handler(handler)
        try:
            yield queue
        finally:
            self._bus.remove_message_handler(handler)
            if self._bus.connected:
                await self._bus_call("RemoveMatch", "s", rule)

    async def wait_closed(self) -> None:
        """Return when the connection to the bus is gone (shielded: cancelling the wait must
        not cancel the bus's own disconnect future, which close() awaits)."""
        await asyncio.shield(self._bus.wait_for_disconnect())

    async def name_owner(self, name: str) -> str:
        """The unique name owning ``name`` (CallError NameHasNoOwner when nobody does)."""
        (owner,) = await self._bus_call("GetNameOwner", "s", name)
        return owner

    async def _bus_call(self, member: str, signature: str, *args: Any) -> list[Any]:
        return await self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", member, signature, list(args))

    # ---- test control (cryptohome-sim only; root only) ---------------------------------------
    async def _control(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        return await self.call(names.CRYPTOHOME_NAME, names.CONTROL_PATH, names.CONTROL_IFACE,
                               member, signature, list(args))

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

    async def emit_low_disk_space(self, free_bytes: int) -> None:
        await self._control("EmitLowDiskSpace", "t", free_bytes)
