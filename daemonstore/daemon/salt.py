"""The per-user store path of ``daemonstore path DAEMON USER``: libbrillo's
``GetDaemonStorePath`` (docs/chromeos.md §3), with the hash computed here from the system salt
(library layer; reads the salt through any object with the Host's ``read_file``).

``daemonstore path`` never *creates* a salt: a path computed from a salt that no cryptohome will
use would point at a store nobody mounts, so a missing salt is an error there. Creating one is
cryptohome's job: :func:`load_or_create_salt`, used by cryptohome_sim and the test worlds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from daemonstore import paths
from daemonstore.errors import DaemonStoreError, errname
from daemonstore.host import Host

__all__ = ["SaltMissing", "load_or_create_salt", "read_salt", "user_store_path"]


class Reader(Protocol):
    def read_file(self, path: str, *, safe: bool = False) -> bytes: ...


class SaltMissing(DaemonStoreError, LookupError):
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
            name = errname(exc.errno)
            found.append(f"{path}: {exc.strerror or name}")
            continue
        if 0 < len(data) <= paths.MAX_SALT:
            return data
        found.append(f"{path}: unusable size {len(data)}")
    raise SaltMissing("no system salt (" + "; ".join(found) + "); cryptohome creates it at the "
                      "first sign-in")


def load_or_create_salt(host: Host, random_bytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """The system salt, created if missing (cryptohome's ``GetOrCreateSalt``; the one copy that
    cryptohome_sim and the test worlds use).

    Read like :func:`read_salt`. A legacy salt of an invalid size is deleted, as
    ``GetOrRemoveSalt`` does. When neither is usable a fresh 16-byte salt
    (``kCryptohomeDefaultSaltLength``) is written, mode 0644, at ``/home/.shadow/salt``: the
    contract (docs/architecture.md §5) puts it there (ChromeOS writes new salts to
    /var/lib/system_salt).
    """
    try:
        return read_salt(host)
    except SaltMissing:
        pass
    if host.exists(paths.SALT):
        host.unlink(paths.SALT, safe=True)
    for path, mode in (("/home", 0o755), (paths.SHADOW, 0o700)):  # /home/.shadow is root-only
        if not host.exists(path):
            host.mkdir(path, mode, safe=True)
    salt = random_bytes(paths.SALT_LENGTH)
    host.write_file(paths.SALT, salt, mode=0o644, safe=True)
    return salt


def user_store_path(host: Reader, daemon: str, user: str, *, cache: bool = False) -> str:
    """``/run/daemon-store[-cache]/<daemon>/<hash of user>``. Raises ``paths.BadName`` for a bad
    daemon or user name (checked before the salt is read), :class:`SaltMissing`."""
    paths.check_daemon_name(daemon)
    paths.check_username(user)
    return paths.user_store(daemon, paths.sanitize_username(read_salt(host), user), cache)
