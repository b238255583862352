"""D-Bus skin of the simulated cryptohome and session manager (the only module exporting D-Bus
objects; dbus-fast ``ServiceInterface`` classes over :class:`cryptohome_sim.core.Cryptohome`).

ChromeOS's API, byte for byte (docs/architecture.md §7, docs/chromeos.md §4, §8):

``org.chromium.UserDataAuth`` at ``/org/chromium/UserDataAuth``, every method ``(ay) -> (ay)``
carrying a ``user_data_auth`` protobuf (:mod:`daemonstore.dbus.proto.UserDataAuth_pb2`):
  ``org.chromium.CryptohomeMiscInterface``: ``GetSanitizedUsername``, ``GetSystemSalt``
  ``org.chromium.UserDataAuthInterface``: ``StartAuthSession``, ``InvalidateAuthSession``,
  ``CreatePersistentUser``, ``AuthenticateAuthFactor``, ``PreparePersistentVault``,
  ``PrepareEphemeralVault``, ``PrepareGuestVault``, ``Unmount``, ``IsMounted``, ``Remove``;
  signal ``LowDiskSpace(ay)``.
``org.chromium.SessionManager`` at ``/org/chromium/SessionManager``,
``org.chromium.SessionManagerInterface``: ``StartSession(ss)``, ``StopSession(s)``,
``StopSessionWithReason(u)``, ``RetrieveSessionState() -> s``, ``RetrievePrimarySession() ->
ss``, ``RetrieveActiveSessions() -> a{ss}``, ``IsGuestSessionActive() -> b``; signal
``SessionStateChanged(s)``.
``org.daemonstore.Control`` at ``/org/daemonstore/Control`` (tests only, on cryptohome's
connection): ``AddUser(s) -> s``, ``InjectFailure(si)``, ``ClearFailures()``, ``GetCalls() ->
a(sas)``, ``ClearCalls()``, ``InstallDaemon(suuu) -> as``, ``GetMountinfo(s) -> s``,
``EmitLowDiskSpace(t)``.

A cryptohome refusal is a reply whose ``error`` is a ``CryptohomeErrorCode``; a request over
:data:`MAX_REQUEST` bytes or that does not parse, or a call with the wrong D-Bus signature, is
``org.freedesktop.DBus.Error.InvalidArgs``. Nothing is logged before the request is valid.
Who may call what is checked twice, from one table (``daemonstore/dbus/callers.py``): by the
bus policy (``daemonstore/dbus/policy/*.conf``) and, before anything else, by the service itself
on each connection (:mod:`cryptohome_sim.callers`): a caller the table does not allow gets the
bus's own ``AccessDenied``.

The two services use two connections, as cryptohomed and session_manager are two processes; both
live in one asyncio loop. Every method that touches the (not thread-safe) Host runs in the
Host's lane (daemonstore.hostlane: one worker thread, one job at a time), so a long sign-in
never blocks the loop: a call that needs no Host is answered meanwhile.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any

from dbus_fast import BusType, DBusError, Message, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusInt32, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

from cryptohome_sim.callers import CallerCheck, CallerIds, check_dispatch
from cryptohome_sim.core import Cryptohome
from cryptohome_sim.methods import (
    LANE,
    LOOP,
    MAX_REQUEST,
    SALT,
    Bytes,
    Interface,
    account_of,
    proto_method,
    session_errors,
)
from daemonstore.dbus import names
from daemonstore.dbus.proto import UserDataAuth_pb2 as uda
from daemonstore.errors import DaemonStoreError

_log = logging.getLogger("cryptohome_sim")

StrList = Annotated[list[str], DBusSignature("as")]

__all__ = ["MAX_REQUEST", "CallerIds", "Service", "ServiceError"]


class ServiceError(DaemonStoreError, RuntimeError):
    """The service could not be put on the bus (connection refused, name taken or denied)."""


# ---- cryptohome ------------------------------------------------------------------------------


class CryptohomeMisc(Interface):
    def __init__(self, core: Cryptohome) -> None:
        super().__init__(names.MISC_IFACE, core)

    @dbus_method()
    @proto_method(uda.GetSanitizedUsernameRequest, uda.GetSanitizedUsernameReply, SALT)
    def GetSanitizedUsername(self, request: Any) -> Any:
        self._core.hash_of(request.username)  # validates (InvalidArgs) before the log
        self._called("GetSanitizedUsername", request.username)
        return uda.GetSanitizedUsernameReply(
            sanitized_username=self._core.sanitized_username(request.username))

    @dbus_method()
    @proto_method(uda.GetSystemSaltRequest, uda.GetSystemSaltReply, SALT)
    def GetSystemSalt(self, request: Any) -> Any:
        self._called("GetSystemSalt")
        return uda.GetSystemSaltReply(salt=self._core.salt)


class UserDataAuth(Interface):
    def __init__(self, core: Cryptohome) -> None:
        super().__init__(names.USERDATAAUTH_IFACE, core)

    @dbus_signal()
    def LowDiskSpace(self, data: bytes) -> Bytes:
        return data

    def emit_low_disk_space(self, free_bytes: int) -> None:
        self._core.log_call(names.LOW_DISK_SIGNAL, free_bytes)
        self.LowDiskSpace(uda.LowDiskSpace(disk_free_bytes=free_bytes).SerializeToString())

    @dbus_method()
    @proto_method(uda.StartAuthSessionRequest, uda.StartAuthSessionReply, SALT)
    def StartAuthSession(self, request: Any) -> Any:
        account = account_of(request, "account_id")
        self._core.hash_of(account)
        self._called("StartAuthSession", account, request.is_ephemeral_user)
        sid, exists = self._core.start_auth_session(account, ephemeral=request.is_ephemeral_user)
        return uda.StartAuthSessionReply(auth_session_id=sid, user_exists=exists,
                                         broadcast_id=sid)

    @dbus_method()
    @proto_method(uda.InvalidateAuthSessionRequest, uda.InvalidateAuthSessionReply, LOOP)
    def InvalidateAuthSession(self, request: Any) -> Any:
        self._called("InvalidateAuthSession")
        self._core.invalidate_auth_session(request.auth_session_id)
        return uda.InvalidateAuthSessionReply()

    @dbus_method()
    @proto_method(uda.CreatePersistentUserRequest, uda.CreatePersistentUserReply, LOOP)
    def CreatePersistentUser(self, request: Any) -> Any:
        self._called("CreatePersistentUser")
        return uda.CreatePersistentUserReply(
            sanitized_username=self._core.create_persistent_user(request.auth_session_id))

    @dbus_method()
    @proto_method(uda.AuthenticateAuthFactorRequest, uda.AuthenticateAuthFactorReply, LOOP)
    def AuthenticateAuthFactor(self, request: Any) -> Any:
        self._called("AuthenticateAuthFactor", *request.auth_factor_labels)
        self._core.authenticate_auth_factor(request.auth_session_id)
        return uda.AuthenticateAuthFactorReply()

    @dbus_method()
    @proto_method(uda.PreparePersistentVaultRequest, uda.PreparePersistentVaultReply)
    def PreparePersistentVault(self, request: Any) -> Any:
        self._called("PreparePersistentVault")
        return uda.PreparePersistentVaultReply(
            sanitized_username=self._core.prepare_persistent_vault(request.auth_session_id))

    @dbus_method()
    @proto_method(uda.PrepareEphemeralVaultRequest, uda.PrepareEphemeralVaultReply)
    def PrepareEphemeralVault(self, request: Any) -> Any:
        self._called("PrepareEphemeralVault")
        return uda.PrepareEphemeralVaultReply(
            sanitized_username=self._core.prepare_ephemeral_vault(request.auth_session_id))

    @dbus_method()
    @proto_method(uda.PrepareGuestVaultRequest, uda.PrepareGuestVaultReply)
    def PrepareGuestVault(self, request: Any) -> Any:
        self._called("PrepareGuestVault")
        return uda.PrepareGuestVaultReply(sanitized_username=self._core.prepare_guest_vault())

    @dbus_method()
    @proto_method(uda.UnmountRequest, uda.UnmountReply)
    def Unmount(self, request: Any) -> Any:
        self._called("Unmount")
        self._core.unmount()
        return uda.UnmountReply()

    @dbus_method()
    @proto_method(uda.IsMountedRequest, uda.IsMountedReply)
    def IsMounted(self, request: Any) -> Any:
        if request.username:
            self._core.hash_of(request.username)
        self._called("IsMounted", request.username)
        mounted, ephemeral = self._core.is_mounted(request.username)
        return uda.IsMountedReply(is_mounted=mounted, is_ephemeral_mount=ephemeral)

    @dbus_method()
    @proto_method(uda.RemoveRequest, uda.RemoveReply)
    def Remove(self, request: Any) -> Any:
        account = account_of(request, "identifier")
        self._core.hash_of(account)
        self._called("Remove", account)
        self._core.remove(account)
        return uda.RemoveReply()


class Control(Interface):
    """Test control, never needed by a real client (python-dbusmock's ``AddSession``,
    ``GetCalls``, ``ClearCalls``)."""

    def __init__(self, core: Cryptohome, uda_iface: UserDataAuth) -> None:
        super().__init__(names.CONTROL_IFACE, core)
        self._uda = uda_iface

    @dbus_method()
    @session_errors
    async def AddUser(self, username: DBusStr) -> DBusStr:
        def call() -> str:
            user_hash = self._core.add_user(username)
            self._called("AddUser", username)
            return user_hash

        return await self._run(SALT, call)

    @dbus_method()
    @session_errors
    def InjectFailure(self, method: DBusStr, step: DBusInt32) -> None:
        self._core.inject_failure(method, step)
        self._called("InjectFailure", method, step)

    @dbus_method()
    def ClearFailures(self) -> None:
        self._called("ClearFailures")
        self._core.clear_failures()

    @dbus_method()
    def GetCalls(self) -> Annotated[list[list[Any]], DBusSignature("a(sas)")]:
        # not logged: reading the log must not change it
        return [[c.method, list(c.args)] for c in self._core.calls()]

    @dbus_method()
    def ClearCalls(self) -> None:
        self._core.clear_calls()

    @dbus_method()
    @session_errors
    async def InstallDaemon(self, name: DBusStr, uid: DBusUInt32, gid: DBusUInt32,
                            mode: DBusUInt32) -> StrList:
        self._core.check_install(name, mode)
        self._called("InstallDaemon", name, uid, gid, f"{mode:04o}")
        return await self._run(LANE, lambda: self._core.install_daemon(name, uid, gid, mode))

    @dbus_method()
    async def GetMountinfo(self, namespace: DBusStr) -> DBusStr:
        def call() -> str:
            if namespace and namespace not in self._core.host.namespaces():
                raise DBusError(names.INVALID_ARGS, f"no namespace {namespace!r}")
            return self._core.host.mountinfo(namespace or self._core.namespace)

        return await self._run(LANE, call)

    @dbus_method()
    def EmitLowDiskSpace(self, free_bytes: Annotated[int, DBusSignature("t")]) -> None:
        """Have cryptohome emit ``LowDiskSpace`` (what ``daemonstore cleanup --watch`` asks
        for when it finds low space: only the owner of the name may send the signal)."""
        self._uda.emit_low_disk_space(free_bytes)


# ---- session manager -------------------------------------------------------------------------


class SessionManager(Interface):
    def __init__(self, core: Cryptohome) -> None:
        super().__init__(names.SESSION_IFACE, core)

    @dbus_signal()
    def SessionStateChanged(self, state: str) -> DBusStr:
        return state

    def _emit(self, state: str) -> None:
        self._core.log_call(names.SESSION_SIGNAL, state)
        _log.info("%s %s", names.SESSION_SIGNAL, state)
        self.SessionStateChanged(state)

    @dbus_method()
    @session_errors
    async def StartSession(self, account_id: DBusStr, unique_identifier: DBusStr) -> None:
        """``started`` once per call (docs/chromeos.md §4.1); the argument is unused. The
        check that the user is mounted is Host work (the lane); the signal goes from the
        loop."""

        def call() -> None:
            self._core.hash_of(account_id)
            self._called("StartSession", account_id)
            self._core.start_session(account_id)

        await self._run(LANE, call)
        self._emit(names.STARTED)

    def _stop(self) -> None:
        self._core.begin_stop()
        self._emit(names.STOPPING)
        self._core.finish_stop()
        self._emit(names.STOPPED)

    @dbus_method()
    @session_errors
    def StopSession(self, unique_identifier: DBusStr) -> None:
        """Ends every session: one ``stopping``, one ``stopped`` (the argument is ignored, as
        in ChromeOS); cryptohome's Unmount comes afterwards (ui-post-stop order)."""
        self._called("StopSession")
        self._stop()

    @dbus_method()
    @session_errors
    def StopSessionWithReason(self, reason: DBusUInt32) -> None:
        self._called("StopSessionWithReason", reason)
        self._stop()

    @dbus_method()
    def RetrieveSessionState(self) -> DBusStr:
        self._called("RetrieveSessionState")
        return self._core.session_state()

    @dbus_method()
    def RetrievePrimarySession(self) -> Annotated[tuple[str, str], DBusSignature("ss")]:
        self._called("RetrievePrimarySession")
        return self._core.primary_session()

    @dbus_method()
    def RetrieveActiveSessions(self) -> Annotated[dict[str, str], DBusSignature("a{ss}")]:
        self._called("RetrieveActiveSessions")
        return self._core.active_sessions()

    @dbus_method()
    def IsGuestSessionActive(self) -> DBusBool:
        self._called("IsGuestSessionActive")
        return self._core.is_guest_session_active()


# ---- putting it on a bus ---------------------------------------------------------------------


def _signature_guard(objects: dict[str, list[ServiceInterface]]) -> Callable[[Message], None]:
    """A message handler answering ``InvalidArgs`` for a known method called with the wrong
    argument signature (dbus-fast would answer ``UnknownMethod``; libbrillo says InvalidArgs)."""
    table: dict[tuple[str, str, str], str] = {}
    for path, interfaces in objects.items():
        for iface in interfaces:
            for method in iface.introspect().methods:
                table[(path, iface.name, method.name)] = method.in_signature

    def guard(msg: Message) -> None:
        if msg.message_type is not MessageType.METHOD_CALL or msg.path not in objects:
            return
        if msg.interface is None:
            wanted = [sig for (path, _, member), sig in table.items()
                      if path == msg.path and member == msg.member]
        else:
            key = (msg.path, msg.interface, msg.member or "")
            wanted = [table[key]] if key in table else []
        if wanted and msg.signature not in wanted:
            raise DBusError(names.INVALID_ARGS,
                            f"{msg.member} takes arguments ({wanted[0]}), "
                            f"got ({msg.signature})")

    return guard


async def _connect(address: str) -> MessageBus:
    try:
        return await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    except Exception as exc:  # OSError, AuthError, InvalidAddressError, ...
        raise ServiceError(f"cannot connect to the bus at {address}: "
                           f"{type(exc).__name__}: {exc}") from None


async def _own(bus: MessageBus, name: str) -> None:
    try:
        reply = await bus.request_name(name, NameFlag.DO_NOT_QUEUE)
    except DBusError as exc:
        raise ServiceError(f"may not own {name}: {exc.type}: {exc.text}") from None
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        raise ServiceError(f"{name} is already owned by another connection")


class Service:
    """cryptohome (and the control object) on one connection, session manager on another.

    ``callers`` says which uids are root and chronos, and which have the daemon role, for the
    caller check (default :meth:`CallerIds.default`: the service's own uid, the ``chronos``
    account, no daemon user); give the same users the bus policy names."""

    def __init__(self, core: Cryptohome, address: str,
                 callers: CallerIds | None = None) -> None:
        self.core = core
        self.address = address
        self.caller_ids = callers if callers is not None else CallerIds.default()
        #: bus name -> the caller check of the connection owning it
        self.callers: dict[str, CallerCheck] = {}
        self.misc = CryptohomeMisc(core)
        self.userdataauth = UserDataAuth(core)
        self.control = Control(core, self.userdataauth)
        self.session_manager = SessionManager(core)
        self._buses: list[MessageBus] = []

    def set_caller_ids(self, ids: CallerIds) -> None:
        """Who is who from now on (a reload of the grant files): every connection's check
        decides its next call by ``ids``; the cached uids stay valid (they are uids, not
        roles)."""
        self.caller_ids = ids
        for check in self.callers.values():
            check.ids = ids

    @classmethod
    async def start(cls, core: Cryptohome, address: str,
                    callers: CallerIds | None = None) -> "Service":
        """Connect, export and own both names; raise :class:`ServiceError` if that fails."""
        check_dispatch()
        service = cls(core, address, callers)
        try:
            await service._put(names.CRYPTOHOME_NAME, {
                names.CRYPTOHOME_PATH: [service.misc, service.userdataauth],
                names.CONTROL_PATH: [service.control]})
            await service._put(names.SESSION_NAME,
                               {names.SESSION_PATH: [service.session_manager]})
        except BaseException:
            await service.stop()
            raise
        return service

    async def _put(self, name: str, objects: dict[str, list[ServiceInterface]]) -> None:
        bus = await _connect(self.address)
        self._buses.append(bus)
        # the caller check first: a refused caller gets AccessDenied before anything is
        # looked at, as when the bus refuses (SECURITY.md, "Caller check")
        check = self.callers[name] = CallerCheck(bus, name, self.caller_ids)
        bus.add_message_handler(check.handle)
        bus.add_message_handler(_signature_guard(objects))
        for path, interfaces in objects.items():
            for iface in interfaces:
                bus.export(path, iface)
        try:
            await check.subscribe()
        except Exception as exc:  # noqa: BLE001 - a DBusError or the connection lost
            raise ServiceError(f"cannot follow callers leaving the bus: {exc}") from None
        await _own(bus, name)

    def low_disk_space(self, free_bytes: int) -> None:
        """Emit ``LowDiskSpace{disk_free_bytes}`` from cryptohome's connection."""
        self.userdataauth.emit_low_disk_space(free_bytes)

    async def wait_closed(self) -> None:
        """Return when either connection is gone (the bus went away or :meth:`stop`)."""
        waits = [asyncio.ensure_future(bus.wait_for_disconnect()) for bus in self._buses]
        if not waits:
            return
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                _log.warning("bus connection ended: %s", f"{type(exc).__name__} {exc}".strip())

    async def stop(self) -> None:
        for check in self.callers.values():
            await check.close()
        for bus in self._buses:
            if bus.connected:
                bus.disconnect()
        for bus in self._buses:
            try:
                await bus.wait_for_disconnect()
            except Exception:  # noqa: BLE001 - a bus that died on its own raised here already
                _log.debug("bus ended with an error", exc_info=True)
        self._buses.clear()
