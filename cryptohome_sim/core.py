"""The simulated cryptohome and session manager as plain Python state (no D-Bus; unit-testable).

:class:`Cryptohome` holds the Host, the salt, known users, who is mounted, the session state, the
call log and injected failures. ``service.py`` is a thin D-Bus skin over it: each D-Bus method
validates its arguments, logs the call here and delegates. Mounting itself is
``daemonstore.session`` (the same sign-in code ``World.login`` runs without a bus).

Errors are :class:`CryptohomeError` with a ``kind`` (``MountFailed``, ``SessionExists``, ...);
the service turns the kind into a D-Bus error name of the interface that was called.

Not thread-safe (neither is the Host): run every call from one asyncio loop.
"""

from __future__ import annotations

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
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host, in_namespace
from daemonstore.session import guest as guest_session

T = TypeVar("T")

#: methods ``InjectFailure`` accepts. For MountEx the step is sign-in's ``fail_at``: an EIO
#: before plan step N (0-based; past the last step nothing fails), so the rollback runs; for
#: the others the next call fails before doing anything and the step must be 0.
INJECTABLE = ("MountEx", "Unmount", "StartSession", "StopSession", "GetSanitizedUsername")


class CryptohomeError(DaemonStoreError):
    """A refused or failed request; ``kind`` becomes the last part of the D-Bus error name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Call:
    """One entry of the call log: a method call (or an emitted signal) and its arguments."""

    method: str
    args: tuple[str, ...]


@dataclass
class _Mounted:
    user_hash: str
    guest: bool
    mounted: list[str] = field(default_factory=list)


def _text(value: object) -> str:
    """A call-log argument as D-Bus tools print it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _step_line(step: object) -> str:
    """A startup step as its shell-like line (``TargetResult.applied`` holds Ops)."""
    to_line = getattr(step, "to_line", None)
    return to_line() if callable(to_line) else str(step)


# ---- salt (chromeos-facts.md §3, "Salt"): one implementation, in daemonstore.daemon.salt -------


P = ParamSpec("P")


def _rooted(fn: Callable[Concatenate[Cryptohome, P], T]) -> Callable[Concatenate[Cryptohome, P], T]:
    """Run a method that touches the Host in the core's own namespace (see Cryptohome)."""

    @functools.wraps(fn)
    def wrapper(self: Cryptohome, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._in_root():
            return fn(self, *args, **kwargs)

    return wrapper


# ---- the core ------------------------------------------------------------------------------------


class Cryptohome:
    """State of the simulated cryptohomed + session_manager pair on one Host.

    Everything runs in the namespace that was current when the core was made (the machine's
    root namespace, where cryptohomed mounts), whatever namespace a test left current; a guest
    is mounted inside ``mnt_chrome`` (daemonstore.session.guest), entered from there.

    ``vault`` is the regular users' vault backend (``"dir"``, or ``"loop"`` on the kernel: an
    ext4 image on a loop device, daemonstore.session.loop_vault); the guest's vault is always a
    tmpfs.
    """

    def __init__(self, host: Host, *, random_bytes: Callable[[int], bytes] = os.urandom,
                 vault: str = "dir") -> None:
        if vault not in session.VAULTS:
            raise ValueError(f"vault must be one of {', '.join(session.VAULTS)}, not {vault!r}")
        self.host = host
        self.vault = vault
        self.namespace = host.current_namespace()
        self._random_bytes = random_bytes
        self._salt: bytes | None = None
        self._users: dict[str, str] = {}          # known accounts: username -> hash
        self._mounted: dict[str, _Mounted] = {}   # mounted by us: username -> record
        self._sessions: dict[str, str] = {}       # signed in, in sign-in order: username -> hash
        self._guests: set[str] = set()
        self._stopping = False
        self._calls: list[Call] = []
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
            raise CryptohomeError("InvalidArgs", f"cannot inject a failure into {method!r}; "
                                  f"one of {', '.join(INJECTABLE)}")
        if step < 0 or (method != "MountEx" and step != 0):
            raise CryptohomeError("InvalidArgs", f"bad step {step} for {method} (MountEx takes "
                                  "a sign-in step >= 0, the other methods only 0)")
        self._failures[method] = step

    def clear_failures(self) -> None:
        self._failures.clear()

    def _take_failure(self, method: str) -> int | None:
        return self._failures.pop(method, None)

    def _fail_if_injected(self, method: str) -> None:
        if self._take_failure(method) is not None:
            raise CryptohomeError("InjectedFailure", f"injected failure in {method}")

    # ---- cryptohome: names ---------------------------------------------------------------------
    @property
    def salt(self) -> bytes:
        if self._salt is None:
            with self._in_root():
                self._salt = load_or_create_salt(self.host, self._random_bytes)
        return self._salt

    def sanitized_username(self, username: str) -> str:
        """``GetSanitizedUsername``: hex(SHA1(salt || ascii-lower(username))), 40 characters."""
        self._fail_if_injected("GetSanitizedUsername")
        return paths.sanitize_username(self.salt, paths.check_username(username))

    def add_user(self, username: str) -> str:
        """Control ``AddUser``: register an account (as if it had signed in before)."""
        user_hash = paths.sanitize_username(self.salt, paths.check_username(username))
        self._users[username] = user_hash
        return user_hash

    def known_users(self) -> dict[str, str]:
        return dict(self._users)

    # ---- cryptohome: mounts --------------------------------------------------------------------
    @_rooted
    def mount(self, username: str, guest: bool = False) -> tuple[str, list[str]]:
        """``MountEx``: mount the user's vault and daemon stores through ``session.sign_in``.

        A new user is created on first mount (Chrome's MountEx with ``create``). Refuses a user
        who is already mounted. On failure sign_in has rolled back and the reason is kept.

        ``guest=True`` mounts the guest session (ChromeOS's ``MountGuestEx``): an ephemeral
        vault inside ``mnt_chrome`` (``guest.sign_in_guest``). The user name must then be
        ``"$guest"`` (``paths.GUEST_USER``), the only guest there is; any other name, or
        ``"$guest"`` without ``guest=True``, is ``InvalidArgs`` -- a regular account never
        silently becomes an ephemeral one, nor the reverse.
        """
        fail_at = self._take_failure("MountEx")
        paths.check_username(username)
        if guest or username == paths.GUEST_USER:
            return self._mount_guest(username, guest, fail_at)
        user_hash = paths.sanitize_username(self.salt, username)
        if username in self._mounted or user_hash in session.mounted_users(self.host):
            raise CryptohomeError("AlreadyMounted", f"{username} is already mounted")
        try:
            # first_user=None: sign-in decides from mountinfo (whoever finds
            # /home/chronos/user free), so users mounted by World.login count too
            result = session.sign_in(self.host, user_hash, fail_at=fail_at, vault=self.vault)
        except session.SignInError as exc:  # rolled back already; the reason names the step
            raise CryptohomeError("MountFailed", f"{username}: {exc}") from exc
        self._users.setdefault(username, user_hash)
        self._mounted[username] = _Mounted(user_hash, guest, list(result.mounted))
        return user_hash, list(result.mounted)

    def _mount_guest(self, username: str, guest_flag: bool,
                     fail_at: int | None) -> tuple[str, list[str]]:
        if username != paths.GUEST_USER:
            raise CryptohomeError("InvalidArgs", f"a guest mount is for the user "
                                  f"{paths.GUEST_USER!r}, not {username!r}")
        if not guest_flag:
            raise CryptohomeError("InvalidArgs", f"{paths.GUEST_USER} is the guest user: mount "
                                  "it with guest=true")
        user_hash = paths.sanitize_username(self.salt, username)
        if username in self._mounted or user_hash in guest_session.mounted_guests(self.host):
            raise CryptohomeError("AlreadyMounted", f"{username} is already mounted")
        try:
            result = guest_session.sign_in_guest(self.host, user_hash, fail_at=fail_at)
        except session.SignInError as exc:  # rolled back inside mnt_chrome already
            raise CryptohomeError("MountFailed", f"{username}: {exc}") from exc
        self._mounted[username] = _Mounted(user_hash, True, list(result.mounted))
        return user_hash, list(result.mounted)

    def _is_mounted(self, username: str, user_hash: str) -> bool:
        if username == paths.GUEST_USER:
            return user_hash in guest_session.mounted_guests(self.host)
        return user_hash in session.mounted_users(self.host)

    @_rooted
    def unmount(self, username: str) -> list[str]:
        """``Unmount``: tear down the user's mounts (``session.sign_out``).

        Refused while the user still has a session: ChromeOS unmounts in ui-post-stop, after
        ``stopped`` (chromeos-facts.md §4), and daemons rely on that order. Returns the mount
        points removed (busy ones lazily detached included); ``UnmountFailed`` if any is left.
        """
        self._fail_if_injected("Unmount")
        user_hash = paths.sanitize_username(self.salt, paths.check_username(username))
        if username in self._sessions:
            raise CryptohomeError("SessionActive", f"{username} still has a session; "
                                  "StopSession first")
        if not self._is_mounted(username, user_hash):
            self._mounted.pop(username, None)
            raise CryptohomeError("NotMounted", f"{username} is not mounted")
        if username == paths.GUEST_USER:  # the ephemeral vault and its data go (guest.py)
            result = guest_session.sign_out_guest(self.host, user_hash)
        else:
            result = session.sign_out(self.host, user_hash)  # best effort, never raises
        if result.failed:
            raise CryptohomeError("UnmountFailed", f"{username}: could not unmount "
                                  f"{', '.join(result.failed)}: {'; '.join(result.warnings)}")
        self._mounted.pop(username, None)
        return list(result.unmounted) + list(result.lazily_detached)

    @_rooted
    def mounted_hashes(self) -> list[str]:
        """``ListMounted``: every user hash mounted on the host (whoever mounted it), the guest's
        (mounted in mnt_chrome) last."""
        return list(session.mounted_users(self.host)) + guest_session.mounted_guests(self.host)

    # ---- session manager -----------------------------------------------------------------------
    @_rooted
    def start_session(self, username: str) -> str:
        """``StartSession``: the user's cryptohome must be mounted; state becomes ``started``.
        Returns the hash; the caller emits ``started`` (once per user, chromeos-facts.md §4)."""
        self._fail_if_injected("StartSession")
        user_hash = paths.sanitize_username(self.salt, paths.check_username(username))
        if username in self._sessions:
            raise CryptohomeError("SessionExists", f"{username} already has a session")
        if self._stopping:
            raise CryptohomeError("SessionStopping", "the session is stopping")
        if not self._is_mounted(username, user_hash):
            raise CryptohomeError("NotMounted", f"{username}'s cryptohome is not mounted; "
                                  "MountEx first")
        self._sessions[username] = user_hash
        mounted = self._mounted.get(username)
        if username == paths.GUEST_USER or (mounted is not None and mounted.guest):
            self._guests.add(username)
        return user_hash

    def begin_stop(self, username: str = "") -> list[str]:
        """First half of ``StopSession``: state ``stopping``; returns the users being stopped.

        ``""`` stops every user, as ChromeOS does (its argument is ignored there); a username
        stops only that user (our extension, so one of several signed-in users can leave).
        """
        self._fail_if_injected("StopSession")
        if username:
            paths.check_username(username)
            if username not in self._sessions:
                raise CryptohomeError("SessionDoesNotExist", f"{username} has no session")
            users = [username]
        else:
            if not self._sessions:
                raise CryptohomeError("SessionDoesNotExist", "no session is started")
            users = list(self._sessions)
        self._stopping = True
        return users

    def finish_stop(self, users: list[str]) -> None:
        """Second half: the users are gone; ``stopped`` follows (still ``started`` for others)."""
        for username in users:
            self._sessions.pop(username, None)
            self._guests.discard(username)
        self._stopping = False

    def session_state(self) -> str:
        """``RetrieveSessionState``: stopping while stopping, started with any session, else
        stopped."""
        if self._stopping:
            return names.STOPPING
        return names.STARTED if self._sessions else names.STOPPED

    def primary_session(self) -> tuple[str, str]:
        """``RetrievePrimarySession``: the first non-guest user to sign in, or two empty
        strings."""
        for username, user_hash in self._sessions.items():
            if username not in self._guests:
                return username, user_hash
        return "", ""

    def active_sessions(self) -> dict[str, str]:
        return dict(self._sessions)

    def is_guest_session_active(self) -> bool:
        return bool(self._guests)

    # ---- setting up a model host (control ``InstallDaemon``) ------------------------------------
    @_rooted
    def install_daemon(self, name: str, uid: int, gid: int, mode: int) -> list[str]:
        """Install a daemon's template ``/etc/daemon-store/<name>`` (owner ``uid:gid``, ``mode``)
        and run the boot step (``startup.run_startup``) so its stores are shared self-binds.

        What the ebuild plus chromeos_startup do on a device (chromeos-facts.md §1). A non-root
        ``uid`` missing from ``<root>/etc/passwd`` gets a line there, as the ebuild's user would
        exist, since startup only trusts templates owned by root or a system user. Returns the
        steps startup applied; raises ``StartupFailed`` with startup's reasons if either store
        of this daemon is not ready afterwards.
        """
        template = paths.template(name)
        if mode & ~0o7777:
            raise CryptohomeError("InvalidArgs", f"mode {mode:o} has bits outside 07777")
        if self.host.exists(template):
            raise CryptohomeError("Exists", f"{template} already exists")
        install_template(self.host, name, uid, gid, mode)
        _plan, report = run_startup(self.host)
        mine = [r for r in report.results if r.target.daemon == name]
        problems = [r.line() for r in mine if r.outcome != READY]
        problems += [s.line() for s in report.skipped if s.path == template]
        if problems or not mine:
            raise CryptohomeError("StartupFailed", "; ".join(problems) or
                                  f"startup planned no store for {name}")
        return [_step_line(step) for r in mine for step in r.applied]
