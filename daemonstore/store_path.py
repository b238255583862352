"""The per-user store path of ``daemonstore path DAEMON USER``: libbrillo's
``GetDaemonStorePath`` (chromeos-facts.md §3), with the hash computed here from the system salt
(library layer; reads the salt through any object with the Host's ``read_file``).

Unlike cryptohome, nothing here ever *creates* a salt: a path computed from a salt that no
cryptohome will use would point at a store nobody mounts, so a missing salt is an error.
"""

from __future__ import annotations

import errno
from typing import Protocol

from daemonstore import paths

__all__ = ["SaltMissing", "read_salt", "user_store_path"]


class Reader(Protocol):
    def read_file(self, path: str, *, safe: bool = False) -> bytes: ...


class SaltMissing(LookupError):
    """No usable salt; the message says where it looked and what it found."""


def read_salt(host: Reader) -> bytes:
    """The salt as ``SystemSaltLoader`` finds it: ``/home/.shadow/salt`` first, then
    ``/var/lib/system_salt``; a file counts only with 0 < size <= 1 MiB. Read with
    ``safe=True``: a symlinked salt is not trusted."""
    found = []
    for path in (paths.SALT, paths.SALT_FALLBACK):
        try:
            data = host.read_file(path, safe=True)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            found.append(f"{path}: {exc.strerror or name}")
            continue
        if 0 < len(data) <= paths.MAX_SALT:
            return data
        found.append(f"{path}: unusable size {len(data)}")
    raise SaltMissing("no system salt (" + "; ".join(found) + "); cryptohome creates it at the "
                      "first sign-in")


def user_store_path(host: Reader, daemon: str, user: str, *, cache: bool = False) -> str:
    """``/run/daemon-store[-cache]/<daemon>/<hash of user>``. Raises ``paths.BadName`` for a bad
    daemon or user name (checked before the salt is read), :class:`SaltMissing`."""
    paths.check_daemon_name(daemon)
    paths.check_username(user)
    return paths.user_store(daemon, paths.sanitize_username(read_salt(host), user), cache)
