"""How one D-Bus method of cryptohome-sim runs (the skin's plumbing, used by service.py): a
protobuf request parsed on the loop (size-limited), the work done where it belongs -- in the
Host's lane when it touches the Host (daemonstore.hostlane; SECURITY.md, "Service loop"), on the
loop when it does not -- and the core's refusals turned into ChromeOS's answers."""

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from dbus_fast import DBusError
from dbus_fast.annotations import DBusSignature
from dbus_fast.service import ServiceInterface
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from cryptohome_sim.core import BadRequest, Cryptohome, CryptohomeError, SessionRefused
from daemonstore.dbus import names
from daemonstore.dbus.proto import UserDataAuth_pb2 as uda
from daemonstore.hostlane import lane_for

__all__ = ["LANE", "LOOP", "MAX_REQUEST", "SALT", "Bytes", "Interface", "account_of",
           "proto_method", "session_errors"]

_log = logging.getLogger("cryptohome_sim")

Bytes = Annotated[bytes, DBusSignature("ay")]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
#: the largest request accepted (ChromeOS's are a few hundred bytes)
MAX_REQUEST = 64 * 1024


def _parse(cls: type[ProtoMessage], data: bytes) -> Any:
    if len(data) > MAX_REQUEST:
        raise DBusError(names.INVALID_ARGS, f"request of {len(data)} bytes is over the "
                        f"{MAX_REQUEST}-byte limit")
    request = cls()
    try:
        request.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise DBusError(names.INVALID_ARGS, f"not a {cls.DESCRIPTOR.full_name}: {exc}") from None
    return request


def account_of(request: Any, field: str) -> str:
    """``AccountIdentifier.account_id`` (``email``, deprecated, as fallback)."""
    ident = getattr(request, field)
    return ident.account_id or ident.email


def _refusal(reply_cls: type[ProtoMessage], code: int) -> ProtoMessage:
    """A reply carrying ``error`` = ``code``; a reply without that field (GetSanitizedUsername,
    GetSystemSalt, IsMounted) is sent empty, as ChromeOS does (docs/chromeos.md §3)."""
    if "error" in reply_cls.DESCRIPTOR.fields_by_name:
        return reply_cls(error=code)
    return reply_cls()


#: where a method's work runs (hostlane.py; SECURITY.md, "Service loop"): ``LANE`` in the Host
#: lane (it touches the Host), ``LOOP`` on the loop (it needs no Host), ``SALT`` on the loop once
#: the salt has been read (before that, reading it is Host work)
LANE, LOOP, SALT = "lane", "loop", "salt"


def proto_method(request_cls: type[ProtoMessage], reply_cls: type[ProtoMessage],
           where: str = LANE) -> Callable[[F], F]:
    """Make ``fn(self, request) -> reply`` an ``(ay) -> (ay)`` method: parse (on the loop),
    call (where ``where`` says), serialize.

    A BadRequest becomes ``InvalidArgs``; a CryptohomeError the reply's ``error``; an OSError
    the core did not expect ``MOUNT_FATAL`` (and a log line).
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(self: "Interface", data: Bytes) -> Bytes:
            request = _parse(request_cls, data)

            def call() -> bytes:
                try:
                    reply = fn(self, request)
                except BadRequest as exc:
                    raise DBusError(names.INVALID_ARGS, str(exc)) from None
                except CryptohomeError as exc:
                    _log.info("%s refused: %s: %s", fn.__name__, exc.code_name, exc)
                    reply = _refusal(reply_cls, exc.code)
                except OSError:
                    _log.exception("%s failed", fn.__name__)
                    reply = _refusal(reply_cls, uda.CRYPTOHOME_ERROR_MOUNT_FATAL)
                return reply.SerializeToString()

            return await self._run(where, call)

        del wrapper.__wrapped__  # dbus-fast reads the (ay) -> ay signature from the wrapper
        wrapper.__annotations__ = {"data": Bytes, "return": Bytes}
        return wrapper  # type: ignore[return-value]

    return wrap


def session_errors(fn: F) -> F:
    """BadRequest and SessionRefused as D-Bus errors, for a plain or a coroutine method."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def waiter(*args: Any) -> Any:
            try:
                return await fn(*args)
            except BadRequest as exc:
                raise DBusError(names.INVALID_ARGS, str(exc)) from None
            except SessionRefused as exc:
                raise DBusError(f"{names.SESSION_ERROR}.{exc.kind}", str(exc)) from None

        return waiter  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except BadRequest as exc:
            raise DBusError(names.INVALID_ARGS, str(exc)) from None
        except SessionRefused as exc:
            raise DBusError(f"{names.SESSION_ERROR}.{exc.kind}", str(exc)) from None

    return wrapper  # type: ignore[return-value]


class Interface(ServiceInterface):
    def __init__(self, name: str, core: Cryptohome) -> None:
        super().__init__(name)
        self._core = core
        self._lane = lane_for(core.host)

    def _called(self, method: str, *args: object) -> None:
        self._core.log_call(method, *args)
        _log.info("%s.%s(%s)", self.name, method, ", ".join(repr(a) for a in args))

    async def _run(self, where: str, call: Callable[[], T]) -> T:
        """``call()`` on the loop or in the Host lane (:data:`LANE`)."""
        if where == LOOP or (where == SALT and self._core.salt_ready):
            return call()
        return await self._lane.run(call)
