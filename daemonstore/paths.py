"""ChromeOS path rules, daemon-name and user-hash validation (docs/architecture.md §5).

All paths are sandbox-absolute (``/`` is the host's root, see host.py). Validation raises
:class:`NameError_` subclasses of ValueError whose message names the value and the reason.
"""

from __future__ import annotations

import hashlib
import re

from daemonstore.errors import DaemonStoreError

ETC_DAEMON_STORE = "/etc/daemon-store"
RUN_DAEMON_STORE = "/run/daemon-store"
RUN_DAEMON_STORE_CACHE = "/run/daemon-store-cache"
#: both kinds of store, in the order startup creates them (docs/chromeos.md §1)
STORE_BASES = (RUN_DAEMON_STORE, RUN_DAEMON_STORE_CACHE)
SHADOW = "/home/.shadow"
SALT = "/home/.shadow/salt"
SALT_FALLBACK = "/var/lib/system_salt"
SALT_LENGTH = 16  # kCryptohomeDefaultSaltLength
MAX_SALT = 1 << 20  # a legacy salt is kept if 0 < size <= 1 MiB (docs/chromeos.md §3)
MNT_CHROME = "/run/namespaces/mnt_chrome"
#: where an ephemeral (guest) vault is mounted (docs/chromeos.md §2.6, PerformEphemeralMount)
EPHEMERAL_MOUNT = "/run/cryptohome/ephemeral_mount"
CACHE_DIR = ".cache"
GUEST_USER = "$guest"

_DAEMON = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
#: every rule of check_daemon_name in one match, for the usual valid name (checked per template
#: at boot, bench/boot.py): the pattern, no "..", at most NAME_MAX characters (ASCII only, so
#: as many bytes)
_DAEMON_OK = re.compile(r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
_HASH = re.compile(r"[0-9a-f]{40}\Z")
NAME_MAX = 255



class BadName(DaemonStoreError, ValueError):
    """A daemon name, user name or hash that must not be used to build a path."""


def check_daemon_name(name: str) -> str:
    """Return ``name`` if it is a valid daemon name, else raise BadName saying why."""
    if _DAEMON_OK.match(name):
        return name
    if not name:
        raise BadName("daemon name is empty")
    # Names are bytes on disk: os.listdir hands a non-UTF-8 byte over as a lone surrogate, so
    # measure with surrogateescape (such a name is then refused by the pattern, not a crash).
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise BadName(f"daemon name {name!r} is longer than {NAME_MAX} bytes")
    if ".." in name:
        raise BadName(f"daemon name {name!r} contains '..'")
    if not _DAEMON.match(name):
        raise BadName(f"daemon name {name!r} does not match [A-Za-z0-9_][A-Za-z0-9_.-]*")
    return name


def check_hash(value: str) -> str:
    """Return ``value`` if it is a sanitized user name (40 lowercase hex), else raise BadName."""
    if not _HASH.match(value):
        raise BadName(f"user hash {value!r} is not 40 lowercase hex digits")
    return value


def is_daemon_name(name: str) -> bool:
    """Whether :func:`check_daemon_name` accepts ``name``."""
    try:
        check_daemon_name(name)
    except BadName:
        return False
    return True


def is_hash(value: str) -> bool:
    """Whether :func:`check_hash` accepts ``value``."""
    return bool(_HASH.match(value))


def check_username(name: str) -> str:
    """A user name is hashed, never used as a path; still refuse the empty and absurd ones."""
    if not name or len(name) > 256 or any(ord(c) < 0x20 for c in name) or "\x7f" in name:
        raise BadName(f"user name {name!r} is empty, too long or has control characters")
    try:
        name.encode("utf-8")  # it is hashed as UTF-8 (a non-UTF-8 argv byte is a lone surrogate)
    except UnicodeEncodeError:
        raise BadName(f"user name {name!r} is not valid UTF-8") from None
    return name


def sanitize_username(salt: bytes, username: str) -> str:
    """``brillo::cryptohome::home::SanitizeUserNameWithSalt``: hex(SHA1(salt || lower(user))).

    Lower-casing is bytewise ASCII ``tolower`` (docs/chromeos.md §3), not Unicode lower().
    """
    raw = username.encode("utf-8")
    lowered = bytes(b + 32 if 0x41 <= b <= 0x5A else b for b in raw)
    return hashlib.sha1(salt + lowered).hexdigest()


def template(daemon: str) -> str:
    return f"{ETC_DAEMON_STORE}/{check_daemon_name(daemon)}"


def store(daemon: str, cache: bool = False) -> str:
    base = RUN_DAEMON_STORE_CACHE if cache else RUN_DAEMON_STORE
    return f"{base}/{check_daemon_name(daemon)}"


def user_store(daemon: str, user_hash: str, cache: bool = False) -> str:
    """``/run/daemon-store[-cache]/<d>/<hash>`` (libbrillo ``GetDaemonStorePath``)."""
    return f"{store(daemon, cache)}/{check_hash(user_hash)}"


def shadow(user_hash: str) -> str:
    return f"{SHADOW}/{check_hash(user_hash)}"


def vault(user_hash: str) -> str:
    """Persistent per-user storage backing the mounted vault (stands in for eCryptfs/dm-crypt)."""
    return f"{shadow(user_hash)}/vault"


def vault_mount(user_hash: str) -> str:
    return f"{shadow(user_hash)}/mount"


def vault_image(user_hash: str) -> str:
    """The ext4 image of the loop vault (``--vault loop``, daemonstore.session.loop_vault)."""
    return f"{shadow(user_hash)}/vault.img"


def ephemeral_mount(user_hash: str) -> str:
    """``/run/cryptohome/ephemeral_mount/<hash>``: a guest's vault (a tmpfs, in mnt_chrome)."""
    return f"{EPHEMERAL_MOUNT}/{check_hash(user_hash)}"


def store_in_vault(daemon: str, cache: bool = False) -> str:
    """A store's directory relative to the vault mount: ``root/<d>`` or ``root/.cache/<d>``."""
    sub = f"root/{CACHE_DIR}" if cache else "root"
    return f"{sub}/{check_daemon_name(daemon)}"


def vault_store(user_hash: str, daemon: str, cache: bool = False) -> str:
    """Bind source: ``<vault mount>/root/<d>`` or ``<vault mount>/root/.cache/<d>``."""
    return f"{vault_mount(user_hash)}/{store_in_vault(daemon, cache)}"


def home_root(user_hash: str) -> str:
    return f"/home/root/{check_hash(user_hash)}"


def home_user(user_hash: str) -> str:
    return f"/home/user/{check_hash(user_hash)}"


def home_chronos(user_hash: str) -> str:
    return f"/home/chronos/u-{check_hash(user_hash)}"


HOME_CHRONOS_USER = "/home/chronos/user"
