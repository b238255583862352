"""The daemon role's grant files: ``/etc/dbus-1/system.d/daemonstore-<user>.conf``, one per
daemon user, a ``<policy user="USER">`` block allowing exactly the daemon role's methods of the
caller table (:data:`daemonstore.dbus.callers.DAEMON`).

``daemonstore install --daemon-user USER`` writes them (:func:`render_grant`); dbus-daemon reads
them with the rest of ``system.d``; cryptohome-sim reads the same files (:func:`read_grants`)
to learn which users have the daemon role, so the files are the one source of truth for both
layers: a user granted on the bus is granted by the service, and only then. A file is taken only
when it is byte for byte what :func:`render_grant` writes for the user its name says, is a
regular file (never a symlink) and cannot have been written by anyone but root or the service's
own user; anything else is skipped with the reason (the bus may still read it: it is then the
bus policy alone, as before the caller check, and cryptohome-sim refuses that user).

On ChromeOS the per-daemon blocks sit in ``login_manager/SessionManager.conf`` itself; here
they are separate files so that installing a daemon adds a file and changes none.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from daemonstore.dbus.callers import ALL, CALLERS, DAEMON
from daemonstore.errors import DaemonStoreError

__all__ = ["BadDaemonUser", "Grants", "check_daemon_user", "grant_file_name", "read_grants",
           "render_grant"]

PREFIX = "daemonstore-"
SUFFIX = ".conf"
#: a passwd name as useradd takes it (ChromeOS's: biod, cdm-oemcrypto, vm_cicerone), or a uid
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10}")
_FILE = re.compile(re.escape(PREFIX) + r"(.+)" + re.escape(SUFFIX))


class BadDaemonUser(DaemonStoreError, ValueError):
    """A daemon user name that cannot be granted (the message says why)."""


def check_daemon_user(user: str) -> str:
    """``user`` if it can be named in a grant: a user name or a uid, not root's."""
    if not _USER.fullmatch(user):
        raise BadDaemonUser(f"daemon user {user!r}: not a user name ([a-z_][a-z0-9_-]*, at "
                            "most 32 characters) or a uid")
    if user in ("root", "0") or (user.isdecimal() and int(user) == 0):
        raise BadDaemonUser(f"daemon user {user!r}: root may call everything already")
    return user


def grant_file_name(user: str) -> str:
    return f"{PREFIX}{check_daemon_user(user)}{SUFFIX}"


def _rules() -> list[tuple[str, str, str]]:
    """(destination, interface, member) of the daemon role, in a fixed order."""
    out = []
    for name in sorted(CALLERS):
        grant = CALLERS[name].get(DAEMON)
        if grant is None:
            continue
        assert not isinstance(grant, type(ALL)), "the daemon role never gets a whole service"
        out += [(name, iface, member) for iface, member in sorted(grant)]
    return out


def render_grant(user: str) -> str:
    """The grant file for ``user`` (no ``--`` in the comment: XML forbids it there)."""
    check_daemon_user(user)
    rules = "".join(f'    <allow send_destination="{dest}"\n'
                    f'           send_interface="{iface}"\n'
                    f'           send_member="{member}"/>\n'
                    for dest, iface, member in _rules())
    return f"""\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!--
  Written by daemonstore install (its daemon-user option): the daemon role of the caller table
  (daemonstore/dbus/callers.py) for one daemon user, the session queries ChromeOS grants its
  daemons. cryptohome-sim reads this file too, and only while it is exactly what install writes.
-->
<busconfig>
  <policy user="{user}">
{rules}  </policy>
</busconfig>
"""


@dataclass(frozen=True)
class Grants:
    """What :func:`read_grants` found: the users granted, and the files skipped (why)."""

    users: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


def read_grants(directory: str) -> Grants:
    """The daemon users whose grant file in ``directory`` is valid (module docstring); a
    missing directory grants nobody."""
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return Grants(())
    users: list[str] = []
    skipped: list[tuple[str, str]] = []
    for entry in entries:
        match = _FILE.fullmatch(entry)
        if match is None:
            continue
        path = os.path.join(directory, entry)
        reason = _why_not(path, match.group(1))
        if reason is None:
            users.append(match.group(1))
        else:
            skipped.append((path, reason))
    return Grants(tuple(users), tuple(skipped))


def _why_not(path: str, user: str) -> str | None:
    try:
        want = render_grant(user).encode()
    except BadDaemonUser as exc:
        return str(exc)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open it: {exc.strerror}"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # fdopen would refuse a directory; a FIFO never ends
        os.close(fd)
        return "not a regular file"
    with os.fdopen(fd, "rb") as f:
        if st.st_uid not in (0, os.geteuid()):
            return f"owned by uid {st.st_uid}, not root"
        if st.st_mode & 0o022:
            return f"writable by others (mode {st.st_mode & 0o7777:04o})"
        if f.read(len(want) + 1) != want:
            return "not what daemonstore install writes for that user"
    return None
