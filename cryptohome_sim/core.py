"""The simulated cryptohomed and session_manager as plain Python state (no D-Bus; unit-testable).

:class:`Cryptohome` holds the Host, the salt, the accounts, the auth sessions, who is mounted,
the session state, the call log and injected failures. ``service.py`` is the D-Bus skin: it
parses a request, logs it here and delegates. Mounting itself is ``daemonstore.session`` (the
same sign-in code ``World.login`` runs without a bus).

Semantics are ChromeOS's (docs/chromeos.md §4, §8; ``userdataauth.cc``,
``session_manager_impl.cc``), with the deviations listed in README "Known deviations":

* An account exists once ``CreatePersistentUser`` made it (or the control ``AddUser``);
  ``PreparePersistentVault`` of any other user is ``ACCOUNT_NOT_FOUND``.
* No credentials are kept: ``AuthenticateAuthFactor`` accepts any factor of an existing user.
* ``PrepareGuestVault`` is refused while anyone is mounted; ``Unmount`` unmounts everyone and,
  as cryptohome, leaves the empty store targets (``remove_store_targets``: removes them too).
* ``StopSession`` ends every session (one ``stopping``, one ``stopped``); ChromeOS has no
  per-user sign-out.

Refusals are :class:`CryptohomeError` (a ``CryptohomeErrorCode`` for the reply) or
:class:`SessionRefused` (a session_manager D-Bus error); a malformed argument is
:class:`BadRequest` (D-Bus ``InvalidArgs``).

Not thread-safe (neither is the Host): the D-Bus skin runs every method that touches the Host
in the Host's lane (daemonstore.hostlane), one at a time; the rest only reads or replaces
plain Python state, which the GIL keeps whole.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from daemonstore import paths, session
from daemonstore.boot.apply import READY, run_startup
from daemonstore.boot.seed import install_template
from daemonstore.daemon.salt import load_or_create_salt
from daemonstore.dbus import names
from daemonstore.dbus.proto import UserDataAuth_pb2 as uda
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host, in_namespace
from daemonstore.ops import RemoveTree, flatten
from daemonstore.session import guest as guest_session

T = TypeVar("T")
P = ParamSpec("P")
PlanT = TypeVar("PlanT", bound=session.SignInPlan)

#: methods ``InjectFailure`` accepts. For the three Prepare*Vault the step is sign-in's
#: ``fail_at``: an EIO before plan step N (0-based; past the last step nothing fails), so the
#: rollback runs; for the others the next call fails before doing anything and the step is 0.
MOUNTING = ("PreparePersistentVault", "PrepareEphemeralVault", "PrepareGuestVault")
INJECTABLE = (*MOUNTING, "Unmount", "StartSession", "StopSession", "GetSanitizedUsername")
#: the call log keeps the newest entries only (a hostile caller must not grow it forever)
CALL_LOG_LIMIT = 1000
#: live auth sessions kept; the oldest is dropped beyond this (ChromeOS times them out)
AUTH_SESSION_LIMIT = 64
AUTH_SESSION_ID_BYTES = 16

# CryptohomeErrorCode values used here (UserDataAuth.proto; docs/chromeos.md §8.2)
E = uda.CryptohomeErrorCode
ACCOUNT_NOT_FOUND = E.CRYPTOHOME_ERROR_ACCOUNT_NOT_FOUND
MOUNT_FATAL = E.CRYPTOHOME_ERROR_MOUNT_FATAL
MOUNT_POINT_BUSY = E.CRYPTOHOME_ERROR_MOUNT_MOUNT_POINT_BUSY
REMOVE_FAILED = E.CRYPTOHOME_ERROR_REMOVE_FAILED
INVALID_ARGUMENT = E.CRYPTOHOME_ERROR_INVALID_ARGUMENT


class CryptohomeError(DaemonStoreError):
    """A refusal cryptohomed answers with ``error`` = ``code`` in its reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def code_name(self) -> str:
        return uda.CryptohomeErrorCode.Name(self.code)


class SessionRefused(DaemonStoreError):
    """A session_manager refusal: D-Bus error ``org.chromium.SessionManagerInterface.<kind>``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BadRequest(DaemonStoreError, ValueError):
    """A malformed argument (D-Bus ``InvalidArgs``); also what a control call refuses."""


@dataclass(frozen=True)
class Call:
    """One entry of the call log: a method call (or an emitted signal) and its arguments."""

    method: str
    args: tuple[str, ...]


@dataclass
class AuthSession:
    username: str
    user_hash: str
    ephemeral: bool
    authenticated: bool = False


@dataclass
class _Mounted:
    username: str
    kind: str  # "persistent", "ephemeral" (a tmpfs vault in mnt_chrome) or "guest"
    mounted: list[str] = field(default_factory=list)


def _text(value: object) -> str:
    """A call-log argument as D-Bus tools print it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _step_line(step: object) -> str:
    to_line = getattr(step, "to_line", None)
    return to_line() if callable(to_line) else str(step)


def _rooted(fn: Callable[Concatenate[Cryptohome, P], T]) -> Callable[Concatenate[Cryptohome, P], T]:
    """Run a method that touches the Host in the core's own namespace (see Cryptohome)."""

    @functools.wraps(fn)
    def wrapper(self: Cryptohome, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._in_root():
            return fn(self, *args, **kwargs)

    return wrapper


def _under_stores(value: object) -> bool:
    return isinstance(value, str) and any(
        value == base or value.startswith(base + "/") for base in paths.STORE_BASES)


def _without_stores(plan: PlanT) -> PlanT:
    """The sign-in plan minus every step that touches ``/run/daemon-store{,-cache}``
    (``--no-daemon-stores``: the session hook makes those binds)."""
    steps = tuple(op for op in plan.steps
                  if not (dataclasses.is_dataclass(op) and any(
                      _under_stores(getattr(op, f.name)) for f in dataclasses.fields(op))))
    return dataclasses.replace(plan, steps=steps, stores=())


def _user(username: str) -> str:
    try:
        return paths.check_username(username)
    except paths.BadName as exc:
        raise BadRequest(str(exc)) from None


class Cryptohome:
    """State of the simulated cryptohomed + session_manager pair on one Host.

    Everything runs in the namespace that was current when the core was made (the machine's
    root namespace, where cryptohomed mounts); the guest's and ephemeral users' tmpfs vaults are
    mounted inside ``mnt_chrome`` (daemonstore.session.guest).

    ``vault`` is the persistent users' vault backend (``"dir"``, or ``"loop"`` on the kernel).
    ``daemon_stores=False``: vaults and home binds only (``--no-daemon-stores``), the session
    hook (``daemonstore hook``) makes the store binds; ``remove_store_targets``: module doc.
    """

    def __init__(self, host: Host, *, random_bytes: Callable[[int], bytes] = os.urandom,
                 vault: str = "dir", daemon_stores: bool = True,
                 remove_store_targets: bool = False) -> None:
        if vault not in session.VAULTS:
            raise ValueError(f"vault must be one of {', '.join(session.VAULTS)}, not {vault!r}")
        self.host = host
        self.vault = vault
        self.daemon_stores = daemon_stores
        self.remove_store_targets = remove_store_targets
        self.namespace = host.current_namespace()
        self._random_bytes = random_bytes
        self._salt: bytes | None = None
        self._users: dict[str, str] = {}          # accounts: hash -> username
        self._auth: collections.OrderedDict[bytes, AuthSession] = collections.OrderedDict()
        self._mounted: dict[str, _Mounted] = {}   # mounted by us: hash -> record
        self._sessions: dict[str, str] = {}       # session manager, sign-in order: user -> hash
        self._stopping = False
        self._calls: collections.deque[Call] = collections.deque(maxlen=CALL_LOG_LIMIT)
        self._failures: dict[str, int] = {}

    def _in_root(self) -> AbstractContextManager[None]:
        return in_namespace(self.host, self.namespace)

    # ---- call log and injected failures (the control interface) -----------------------------
    def log_call(self, method: str, *args: object) -> None:
        self._calls.append(Call(method, tuple(_text(a) for a in args)))

    def calls(self) -> list[Call]:
        return list(self._calls)

    def clear_calls(self) -> None:
        self._calls.clear()

    def inject_failure(self, method: str, step: int) -> None:
        """Make the next call of ``method`` fail (see :data:`INJECTABLE`)."""
        if method not in INJECTABLE:
            raise BadRequest(f"cannot inject a failure into {method!r}; "
                             f"one of {', '.join(INJECTABLE)}")
        if step < 0 or (method not in MOUNTING and step != 0):
            raise BadRequest(f"bad step {step} for {method} (Prepare*Vault take a sign-in "
                             "step >= 0, the other methods only 0)")
        self._failures[method] = step

    def clear_failures(self) -> None:
        self._failures.clear()

    def _take_failure(self, method: str) -> int | None:
        return self._failures.pop(method, None)

    # ---- names ---------------------------------------------------------------------------------
    @property
    def salt_ready(self) -> bool:
        """Has the salt been read (so hashing a name needs no Host)?"""
        return self._salt is not None

    @property
    def salt(self) -> bytes:
        if self._salt is None:
            with self._in_root():
                self._salt = load_or_create_salt(self.host, self._random_bytes)
        return self._salt

    def hash_of(self, username: str) -> str:
        return paths.sanitize_username(self.salt, _user(username))

    def sanitized_username(self, username: str) -> str:
        """``GetSanitizedUsername``: hex(SHA1(salt || ascii-lower(username))), 40 characters."""
        if self._take_failure("GetSanitizedUsername") is not None:
            raise CryptohomeError(MOUNT_FATAL, "injected failure in GetSanitizedUsername")
        return self.hash_of(username)

    def add_user(self, username: str) -> str:
        """Control ``AddUser``: register an account (as if CreatePersistentUser had run)."""
        user_hash = self.hash_of(username)
        self._users[user_hash] = username
        return user_hash

    def known_users(self) -> dict[str, str]:
        """Accounts as ``{username: hash}``."""
        return {name: h for h, name in self._users.items()}

    # ---- auth sessions -------------------------------------------------------------------------
    def start_auth_session(self, username: str, *, ephemeral: bool) -> tuple[bytes, bool]:
        """``StartAuthSession``: a new session id and whether the account exists."""
        user_hash = self.hash_of(username)
        sid = self._random_bytes(AUTH_SESSION_ID_BYTES)
        self._auth[sid] = AuthSession(username, user_hash, ephemeral)
        while len(self._auth) > AUTH_SESSION_LIMIT:
            self._auth.popitem(last=False)
        return sid, user_hash in self._users and not ephemeral

    def _auth_session(self, sid: bytes) -> AuthSession:
        found = self._auth.get(sid)
        if found is None:
            raise CryptohomeError(INVALID_ARGUMENT, "no such auth session (invalidated, "
                                  "expired, or never started)")
        return found

    def invalidate_auth_session(self, sid: bytes) -> None:
        self._auth_session(sid)
        del self._auth[sid]

    def create_persistent_user(self, sid: bytes) -> str:
        """``CreatePersistentUser``: the account now exists; the auth session is authenticated
        (as ChromeOS, whose new user has no factor yet)."""
        auth = self._auth_session(sid)
        if auth.ephemeral:
            raise CryptohomeError(INVALID_ARGUMENT, f"{auth.username}: an ephemeral auth "
                                  "session cannot create a persistent user")
        if auth.user_hash in self._users:
            raise CryptohomeError(INVALID_ARGUMENT, f"{auth.username} already exists")
        self._users[auth.user_hash] = auth.username
        auth.authenticated = True
        return auth.user_hash

    def authenticate_auth_factor(self, sid: bytes) -> None:
        """``AuthenticateAuthFactor``: any factor of an existing user authenticates (the
        simulator keeps no credentials)."""
        auth = self._auth_session(sid)
        if not auth.ephemeral and auth.user_hash not in self._users:
            raise CryptohomeError(ACCOUNT_NOT_FOUND, f"{auth.username} does not exist")
        auth.authenticated = True

    # ---- mounts --------------------------------------------------------------------------------
    def _busy(self, user_hash: str) -> bool:
        return (user_hash in self._mounted or user_hash in session.mounted_users(self.host)
                or user_hash in guest_session.mounted_guests(self.host))

    def _anyone_mounted(self) -> bool:
        return bool(self._mounted or session.mounted_users(self.host)
                    or guest_session.mounted_guests(self.host))

    @_rooted
    def prepare_persistent_vault(self, sid: bytes) -> str:
        """``PreparePersistentVault``: mount the vault, home binds and daemon stores."""
        fail_at = self._take_failure("PreparePersistentVault")
        auth = self._auth_session(sid)
        if auth.ephemeral:
            raise CryptohomeError(INVALID_ARGUMENT, f"{auth.username}: the auth session is "
                                  "for an ephemeral user; PrepareEphemeralVault")
        if auth.user_hash not in self._users:
            raise CryptohomeError(ACCOUNT_NOT_FOUND, f"{auth.username} was never created")
        if not auth.authenticated:
            raise CryptohomeError(INVALID_ARGUMENT, "the auth session is not authenticated")
        if guest_session.mounted_guests(self.host):
            raise CryptohomeError(MOUNT_FATAL, "a guest or ephemeral session is mounted")
        return self._mount(auth.username, auth.user_hash, "persistent", fail_at)

    @_rooted
    def prepare_ephemeral_vault(self, sid: bytes) -> str:
        """``PrepareEphemeralVault``: a tmpfs vault for an ephemeral user's auth session."""
        fail_at = self._take_failure("PrepareEphemeralVault")
        auth = self._auth_session(sid)
        if not auth.ephemeral:
            raise CryptohomeError(INVALID_ARGUMENT, f"{auth.username}: not an ephemeral auth "
                                  "session")
        if self._anyone_mounted():
            raise CryptohomeError(MOUNT_FATAL, "an ephemeral session needs nobody else mounted")
        return self._mount(auth.username, auth.user_hash, "ephemeral", fail_at)

    @_rooted
    def prepare_guest_vault(self) -> str:
        """``PrepareGuestVault``: refused while any user is mounted ("Can not mount guest
        while other sessions are active", userdataauth.cc)."""
        fail_at = self._take_failure("PrepareGuestVault")
        if self._anyone_mounted():
            raise CryptohomeError(MOUNT_FATAL, "can not mount guest while other sessions "
                                  "are active")
        return self._mount(paths.GUEST_USER, self.hash_of(paths.GUEST_USER), "guest", fail_at)

    def _mount(self, username: str, user_hash: str, kind: str, fail_at: int | None) -> str:
        if self._busy(user_hash):
            raise CryptohomeError(MOUNT_POINT_BUSY, f"{username} is already mounted")
        try:
            if kind == "persistent":
                plan = session.plan_sign_in(self.host, user_hash, vault=self.vault)
            else:
                plan = guest_session.plan_sign_in_guest(self.host, user_hash)
            if not self.daemon_stores:
                plan = _without_stores(plan)
            result = plan.apply(self.host, fail_at=fail_at)
        except session.SignInError as exc:  # rolled back already; the reason names the step
            raise CryptohomeError(MOUNT_FATAL, f"{username}: {exc}") from exc
        self._mounted[user_hash] = _Mounted(username, kind, list(result.mounted))
        return user_hash

    @_rooted
    def unmount(self) -> list[str]:
        """``Unmount(UnmountRequest{})``: every user, whoever mounted it. Returns the mount
        points removed; ``MOUNT_FATAL`` naming what is left if anything could not go."""
        if self._take_failure("Unmount") is not None:
            raise CryptohomeError(MOUNT_FATAL, "injected failure in Unmount")
        tidy = self.remove_store_targets
        results = [guest_session.sign_out_guest(self.host, h, remove_store_targets=tidy)
                   for h in guest_session.mounted_guests(self.host)]
        results += [session.sign_out(self.host, h, remove_store_targets=tidy)  # never raises
                    for h in session.mounted_users(self.host)]
        gone = [p for r in results for p in (*r.unmounted, *r.lazily_detached)]
        failed = [f"{p}: {'; '.join(r.warnings)}" for r in results for p in r.failed]
        self._mounted = {h: m for h, m in self._mounted.items() if self._busy_on_host(h)}
        if failed:
            raise CryptohomeError(MOUNT_FATAL, "could not unmount " + ", ".join(failed))
        return gone

    def _busy_on_host(self, user_hash: str) -> bool:
        return (user_hash in session.mounted_users(self.host)
                or user_hash in guest_session.mounted_guests(self.host))

    @_rooted
    def is_mounted(self, username: str) -> tuple[bool, bool]:
        """``IsMounted``: ``(is_mounted, is_ephemeral_mount)`` of ``username``, or of anyone
        when it is empty."""
        guests = guest_session.mounted_guests(self.host)
        if not username:
            return bool(session.mounted_users(self.host) or guests), bool(guests)
        user_hash = self.hash_of(username)
        if user_hash in guests:
            return True, True
        return user_hash in session.mounted_users(self.host), False

    @_rooted
    def mounted_hashes(self) -> list[str]:
        """Every user hash mounted on the host (whoever mounted it), tmpfs vaults last."""
        return list(session.mounted_users(self.host)) + guest_session.mounted_guests(self.host)

    @_rooted
    def remove(self, username: str) -> None:
        """``Remove``: forget the account and delete its vault; refused while it is mounted."""
        user_hash = self.hash_of(username)
        if self._busy(user_hash):
            raise CryptohomeError(REMOVE_FAILED, f"{username} is mounted; Unmount first")
        if user_hash not in self._users and not self.host.exists(paths.shadow(user_hash)):
            raise CryptohomeError(ACCOUNT_NOT_FOUND, f"{username} does not exist")
        if self.host.exists(paths.shadow(user_hash)):
            try:
                RemoveTree(paths.shadow(user_hash)).apply(self.host)
            except OSError as exc:
                raise CryptohomeError(REMOVE_FAILED, f"{username}: {exc}") from None
        self._users.pop(user_hash, None)
        for sid in [s for s, a in self._auth.items() if a.user_hash == user_hash]:
            del self._auth[sid]

    # ---- session manager -----------------------------------------------------------------------
    @_rooted
    def start_session(self, account_id: str) -> str:
        """``StartSession``: the user's cryptohome must be mounted; state becomes ``started``.
        The caller emits ``started`` (once per call, docs/chromeos.md §4.1)."""
        if self._take_failure("StartSession") is not None:
            raise SessionRefused("SessionFailed", "injected failure in StartSession")
        user_hash = self.hash_of(account_id)
        if account_id in self._sessions or user_hash in self._sessions.values():
            raise SessionRefused("SessionExists", f"{account_id} already has a session")
        if self._stopping:
            raise SessionRefused("SessionStopping", "the session is stopping")
        if not self._busy_on_host(user_hash):
            raise SessionRefused("NotMounted", f"{account_id}'s cryptohome is not mounted; "
                                 "Prepare*Vault first")
        if paths.GUEST_USER in self._sessions or (
                self._sessions and account_id == paths.GUEST_USER):
            raise SessionRefused("SessionExists", "a guest session is never multi-profile")
        self._sessions[account_id] = user_hash
        return user_hash

    def begin_stop(self) -> None:
        """First half of ``StopSession``: state ``stopping`` (every session ends)."""
        if self._take_failure("StopSession") is not None:
            raise SessionRefused("SessionFailed", "injected failure in StopSession")
        if not self._sessions:
            raise SessionRefused("SessionDoesNotExist", "no session is started")
        self._stopping = True

    def finish_stop(self) -> None:
        """Second half: nobody is signed in; ``stopped`` follows."""
        self._sessions.clear()
        self._stopping = False

    def session_state(self) -> str:
        if self._stopping:
            return names.STOPPING
        return names.STARTED if self._sessions else names.STOPPED

    def primary_session(self) -> tuple[str, str]:
        """The first non-incognito user to sign in, or two empty strings."""
        for username, user_hash in self._sessions.items():
            if username != paths.GUEST_USER:
                return username, user_hash
        return "", ""

    def active_sessions(self) -> dict[str, str]:
        return dict(self._sessions)

    def is_guest_session_active(self) -> bool:
        """True only when every session is incognito (the guest's)."""
        return bool(self._sessions) and all(u == paths.GUEST_USER for u in self._sessions)

    # ---- setting up a model host (control ``InstallDaemon``) ------------------------------------
    @staticmethod
    def check_install(name: str, mode: int) -> str:
        """The template path for ``InstallDaemon``'s arguments, or BadRequest."""
        try:
            template = paths.template(name)
        except paths.BadName as exc:
            raise BadRequest(str(exc)) from None
        if mode & ~0o7777:
            raise BadRequest(f"mode {mode:o} has bits outside 07777")
        return template

    @_rooted
    def install_daemon(self, name: str, uid: int, gid: int, mode: int) -> list[str]:
        """Install a daemon's template ``/etc/daemon-store/<name>`` (owner ``uid:gid``, ``mode``)
        and run the boot step so its stores are shared self-binds (what the ebuild plus
        chromeos_startup do, docs/chromeos.md §1). Returns the steps startup applied;
        ``StartupFailed`` with startup's reasons if a store of this daemon is not ready."""
        template = self.check_install(name, mode)
        if self.host.exists(template):
            raise BadRequest(f"{template} already exists")
        install_template(self.host, name, uid, gid, mode)
        _plan, report = run_startup(self.host)
        mine = [r for r in report.results if r.target.daemon == name]
        problems = [r.line() for r in mine if r.outcome != READY]
        problems += [s.line() for s in report.skipped if s.path == template]
        if problems or not mine:
            raise BadRequest("; ".join(problems) or f"startup planned no store for {name}")
        return [_step_line(step) for r in mine for step in flatten(r.applied)]  # MakeStore: 4 lines
