"""Who may call what on cryptohome and session_manager: the one table both layers enforce (pure
data).

The bus enforces it through the shipped policy files (``policy/*.conf``, installed in
``/etc/dbus-1/system.d/``); cryptohome-sim enforces it again itself, on every call, from this
table (``cryptohome_sim/callers.py``; SECURITY.md, "Caller check"), so a permissive or broken
bus policy is not the only thing between an unprivileged process and a mount.
``tests/unit/test_caller_table.py`` parses the policy files and requires that they say exactly
this, so the two can never drift.

The shape is ChromeOS's (``cryptohome/etc/org.chromium.UserDataAuth.conf``,
``login_manager/SessionManager.conf``; docs/chromeos.md §8): root owns each name and may call
everything on it (introspection and the test control interface included); chronos (Chrome) may
call the listed methods of the listed interfaces, and an interface is required (dbus-daemon does
not match an ``allow`` rule with ``send_interface`` against a message without one); everyone
else is denied.

The daemon role is the third: a daemon that follows sign-ins asks session_manager who is signed
in *as its own user*. ChromeOS's ``login_manager/SessionManager.conf`` has a ``<policy
user="...">`` block per such daemon user, each granting one or two of the read-only session
queries (biod: ``RetrievePrimarySession`` and ``RetrieveActiveSessions``; u2f, dlp, kerberosd,
crosvm: ``RetrievePrimarySession``; crash, vm_cicerone: ``RetrieveActiveSessions``; power,
authpolicyd: ``RetrieveSessionState``; cdm-oemcrypto: ``RetrievePrimarySession`` and
``RetrieveSessionState``; pciguard: ``IsGuestSessionActive``). :data:`DAEMON` grants exactly
those four queries (no more than some ChromeOS daemon has; nothing that changes a session or
touches cryptohome), to users named at run time: ``daemonstore install --daemon-user USER``
writes one ``<policy user="USER">`` file per user (:mod:`daemonstore.dbus.grants`), the bus
reads it, and cryptohome-sim reads the same files. Signals need no grant (the system bus's
default policy delivers them to everyone).
"""

from __future__ import annotations

from typing import Final

from daemonstore.dbus import names

__all__ = ["ALL", "CALLERS", "CHRONOS", "DAEMON", "ROLES", "ROOT", "may_call"]

#: root and chronos are named as the shipped policy files' ``<policy user="...">``
ROOT: Final = "root"
CHRONOS: Final = "chronos"
#: the daemon role: not a user, but each user a grant file names (``daemonstore-<user>.conf``)
DAEMON: Final = "daemon-user"
ROLES: Final = (ROOT, CHRONOS, DAEMON)


class _All:
    """Every method of every interface (``<allow send_destination="NAME"/>``)."""

    def __repr__(self) -> str:
        return "ALL"


ALL: Final = _All()
Grant = _All | frozenset[tuple[str, str]]


def _methods(interface: str, *members: str) -> frozenset[tuple[str, str]]:
    return frozenset((interface, member) for member in members)


#: bus name -> role -> what that role may call there; a role not listed may call nothing
CALLERS: Final[dict[str, dict[str, Grant]]] = {
    names.CRYPTOHOME_NAME: {
        ROOT: ALL,
        CHRONOS: _methods(names.USERDATAAUTH_IFACE,
                          "IsMounted", "Unmount", "Remove", "StartAuthSession",
                          "InvalidateAuthSession", "CreatePersistentUser",
                          "AuthenticateAuthFactor", "PreparePersistentVault",
                          "PrepareEphemeralVault", "PrepareGuestVault")
        | _methods(names.MISC_IFACE, "GetSanitizedUsername", "GetSystemSalt"),
    },
    names.SESSION_NAME: {
        ROOT: ALL,
        CHRONOS: _methods(names.SESSION_IFACE,
                          "StartSession", "StopSession", "StopSessionWithReason",
                          "RetrieveSessionState", "RetrievePrimarySession",
                          "RetrieveActiveSessions", "IsGuestSessionActive"),
        # the session queries ChromeOS grants daemon users (module docstring); read-only
        DAEMON: _methods(names.SESSION_IFACE,
                         "RetrievePrimarySession", "RetrieveActiveSessions",
                         "RetrieveSessionState", "IsGuestSessionActive"),
    },
}


def may_call(name: str, role: str | None, interface: str | None, member: str | None) -> bool:
    """Whether ``role`` (None: no role at all) may call ``interface.member`` on the
    connection owning ``name``."""
    if role is None:
        return False
    grant = CALLERS.get(name, {}).get(role)
    if grant is None:
        return False
    if isinstance(grant, _All):
        return True
    return interface is not None and member is not None and (interface, member) in grant
