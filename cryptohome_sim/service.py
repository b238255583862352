"""D-Bus skin of the simulated cryptohome and session manager (the only module exporting D-Bus
objects; dbus-fast ``ServiceInterface`` classes over :class:`cryptohome_sim.core.Cryptohome`).

Names (design.md "D-Bus", chromeos-facts.md §3, §4; constants in :mod:`daemonstore.dbus.names`):

``org.chromium.UserDataAuth`` at ``/org/chromium/UserDataAuth``
  ``org.chromium.CryptohomeMiscInterface``
    ``GetSanitizedUsername(s username) -> s``   anyone
    ``GetSystemSalt() -> ay``                    root (the salt links hashes to user names)
  ``org.chromium.CryptohomeMountInterface``      root
    ``MountEx(s username, b guest) -> (s hash, as mounted)``   guest: username ``$guest``,
                                                 an ephemeral vault inside mnt_chrome
    ``Unmount(s username) -> as unmounted``
    ``ListMounted() -> as hashes``
  ``org.daemonstore.Control`` (tests; python-dbusmock's Mock interface, style.md §0 item 8) root
    ``AddUser(s) -> s``, ``InjectFailure(s method, i step)``, ``ClearFailures()``,
    ``GetCalls() -> a(sas)``, ``ClearCalls()``, ``InstallDaemon(s name, u uid, u gid, u mode)
    -> as``, ``GetMountinfo(s namespace) -> s``
``org.chromium.SessionManager`` at ``/org/chromium/SessionManager``
  ``org.chromium.SessionManagerInterface``
    signal ``SessionStateChanged(s state)``      started / stopping / stopped
    ``StartSession(s username)``, ``StopSession(s username)``   root
    ``RetrieveSessionState() -> s``, ``RetrievePrimarySession() -> (ss)``,
    ``RetrieveActiveSessions() -> a{ss}``, ``IsGuestSessionActive() -> b``   anyone

Each method logs the call into the core's call log, validates its arguments (a bad user name is
``org.freedesktop.DBus.Error.InvalidArgs`` with the reason) and delegates to the core. A call
with the right name but the wrong argument types is also ``InvalidArgs``, as libbrillo's
``DBusObject`` answers (dbus-fast alone would say ``UnknownMethod``). Who may call what is the bus
policy's job (``dbus-policy.conf``), not this module's.

The two services use two connections, as cryptohomed and session_manager are two processes; both
live in one asyncio loop, so the (not thread-safe) Host is only ever used from that loop.
"""

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from dbus_fast import BusType, DBusError, Message, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusInt32, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

from cryptohome_sim.core import Cryptohome, CryptohomeError
from daemonstore import paths
from daemonstore.dbus import names
from daemonstore.errors import DaemonStoreError

_log = logging.getLogger("cryptohome_sim")

StrList = Annotated[list[str], DBusSignature("as")]
F = TypeVar("F", bound=Callable[..., Any])


class ServiceError(DaemonStoreError, RuntimeError):
    """The service could not be put on the bus (connection refused, name taken or denied)."""


def _errors(error_prefix: str) -> Callable[[F], F]:
    """Turn the core's errors into D-Bus errors named ``<error_prefix>.<kind>``.

    BadName and a core ``InvalidArgs`` become ``org.freedesktop.DBus.Error.InvalidArgs``; an
    OSError from the Host that the core did not expect becomes ``<prefix>.Failed`` with errno
    and path, so the caller sees more than dbus-fast's bare "internal error".
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            try:
                return fn(*args)
            except paths.BadName as exc:
                raise DBusError(names.INVALID_ARGS, str(exc)) from None
            except CryptohomeError as exc:
                name = (names.INVALID_ARGS if exc.kind == "InvalidArgs"
                        else f"{error_prefix}.{exc.kind}")
                raise DBusError(name, str(exc)) from None
            except OSError as exc:
                _log.exception("%s failed", fn.__name__)
                raise DBusError(f"{error_prefix}.Failed", f"{fn.__name__}: {exc}") from None

        return wrapper  # type: ignore[return-value]

    return wrap


class _Interface(ServiceInterface):
    def __init__(self, name: str, core: Cryptohome) -> None:
        super().__init__(name)
        self._core = core

    def _called(self, method: str, *args: object) -> None:
        self._core.log_call(method, *args)
        _log.info("%s.%s(%s)", self.name, method, ", ".join(repr(a) for a in args))


# ---- cryptohome ------------------------------------------------------------------------------


class CryptohomeMisc(_Interface):
    def __init__(self, core: Cryptohome) -> None:
        super().__init__(names.MISC_IFACE, core)

    @dbus_method()
    @_errors(names.MISC_IFACE + ".Error")
    def GetSanitizedUsername(self, username: DBusStr) -> DBusStr:
        self._called("GetSanitizedUsername", username)
        return self._core.sanitized_username(username)

    @dbus_method()
    @_errors(names.MISC_IFACE + ".Error")
    def GetSystemSalt(self) -> Annotated[bytes, DBusSignature("ay")]:
        self._called("GetSystemSalt")
        return self._core.salt


class CryptohomeMount(_Interface):
    def __init__(self, core: Cryptohome) -> None:
        super().__init__(names.MOUNT_IFACE, core)

    @dbus_method()
    @_errors(names.MOUNT_ERROR)
    def MountEx(self, username: DBusStr,
                guest: DBusBool) -> Annotated[tuple[str, list[str]], DBusSignature("sas")]:
        self._called("MountEx", username, guest)
        return self._core.mount(username, guest)

    @dbus_method()
    @_errors(names.MOUNT_ERROR)
    def Unmount(self, username: DBusStr) -> StrList:
        self._called("Unmount", username)
        return self._core.unmount(username)

    @dbus_method()
    @_errors(names.MOUNT_ERROR)
    def ListMounted(self) -> StrList:
        self._called("ListMounted")
        return self._core.mounted_hashes()


class Control(_Interface):
    """Test control, never needed by a real client (python-dbusmock's ``AddSession``,
    ``GetCalls``, ``ClearCalls``)."""

    def __init__(self, core: Cryptohome) -> None:
        super().__init__(names.CONTROL_IFACE, core)

    @dbus_method()
    @_errors(names.CONTROL_ERROR)
    def AddUser(self, username: DBusStr) -> DBusStr:
        self._called("AddUser", username)
        return self._core.add_user(username)

    @dbus_method()
    @_errors(names.CONTROL_ERROR)
    def InjectFailure(self, method: DBusStr, step: DBusInt32) -> None:
        self._called("InjectFailure", method, step)
        self._core.inject_failure(method, step)

    @dbus_method()
    @_errors(names.CONTROL_ERROR)
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
    @_errors(names.CONTROL_ERROR)
    def InstallDaemon(self, name: DBusStr, uid: DBusUInt32, gid: DBusUInt32,
                      mode: DBusUInt32) -> StrList:
        self._called("InstallDaemon", name, uid, gid, f"{mode:04o}")
        return self._core.install_daemon(name, uid, gid, mode)

    @dbus_method()
    @_errors(names.CONTROL_ERROR)
    def GetMountinfo(self, namespace: DBusStr) -> DBusStr:
        if namespace and namespace not in self._core.host.namespaces():
            raise DBusError(names.INVALID_ARGS, f"no namespace {namespace!r}")
        return self._core.host.mountinfo(namespace or self._core.namespace)


# ---- session manager -------------------------------------------------------------------------


class SessionManager(_Interface):
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
    @_errors(names.SESSION_ERROR)
    def StartSession(self, username: DBusStr) -> None:
        """``started`` once per user that signs in (chromeos-facts.md §4)."""
        self._called("StartSession", username)
        self._core.start_session(username)
        self._emit(names.STARTED)

    @dbus_method()
    @_errors(names.SESSION_ERROR)
    def StopSession(self, username: DBusStr) -> None:
        """``stopping`` then ``stopped``; the caller unmounts afterwards (ui-post-stop order)."""
        self._called("StopSession", username)
        users = self._core.begin_stop(username)
        self._emit(names.STOPPING)
        self._core.finish_stop(users)
        self._emit(names.STOPPED)

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


def _signature_guard(path: str, interfaces: list[ServiceInterface]) -> Callable[[Message], None]:
    """A message handler answering ``InvalidArgs`` for a known method called with the wrong
    argument signature (dbus-fast would answer ``UnknownMethod``)."""
    table: dict[tuple[str, str], str] = {}
    for iface in interfaces:
        for method in iface.introspect().methods:
            table[(iface.name, method.name)] = method.in_signature

    def guard(msg: Message) -> None:
        if msg.message_type is not MessageType.METHOD_CALL or msg.path != path:
            return
        if msg.interface is None:
            wanted = [sig for (_, member), sig in table.items() if member == msg.member]
        else:
            wanted = [table[key]] if (key := (msg.interface, msg.member or "")) in table else []
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
    """cryptohome on one connection, session manager on another, both serving ``core``."""

    def __init__(self, core: Cryptohome, address: str) -> None:
        self.core = core
        self.address = address
        self.misc = CryptohomeMisc(core)
        self.mount = CryptohomeMount(core)
        self.control = Control(core)
        self.session_manager = SessionManager(core)
        self._buses: list[MessageBus] = []

    @classmethod
    async def start(cls, core: Cryptohome, address: str) -> "Service":
        """Connect, export and own both names; raise :class:`ServiceError` if that fails."""
        service = cls(core, address)
        try:
            await service._put(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH,
                               [service.misc, service.mount, service.control])
            await service._put(names.SESSION_NAME, names.SESSION_PATH,
                               [service.session_manager])
        except BaseException:
            await service.stop()
            raise
        return service

    async def _put(self, name: str, path: str, interfaces: list[ServiceInterface]) -> None:
        bus = await _connect(self.address)
        self._buses.append(bus)
        bus.add_message_handler(_signature_guard(path, interfaces))
        for iface in interfaces:
            bus.export(path, iface)
        await _own(bus, name)

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
        for bus in self._buses:
            if bus.connected:
                bus.disconnect()
        for bus in self._buses:
            try:
                await bus.wait_for_disconnect()
            except Exception:  # noqa: BLE001 - a bus that died on its own raised here already
                _log.debug("bus ended with an error", exc_info=True)
        self._buses.clear()
