"""Per-user last-activity records: the "least recently used" order of the low-disk cleanup.

cryptohome cleans the caches of unmounted homes oldest first, by last activity
(docs/chromeos.md §6.3, ``FreeDiskSpaceInternal`` step 2). Its timestamp store is not described in
the facts, so this project defines its own: ``/home/.shadow/<H>/last_activity``, one line with
the time in nanoseconds since the epoch (decimal ASCII). Persistent, next to the vault, root-only
like the rest of ``/home/.shadow/<H>``.

Who writes it: ``session`` at the end of every successful sign-in and at every sign-out of a
signed-in user (the moment the user was last seen). A home without a readable record (missing,
or not a number) sorts as the oldest.

Layer: written once against the Host interface (no os). ``time`` only gives the default clock.
"""

from __future__ import annotations

import time
from typing import Protocol

from daemonstore import paths
from daemonstore.host import Host, Stat

ACTIVITY_FILE = "last_activity"
#: a record longer than this is not ours (a planted huge file is not read into memory twice)
MAX_RECORD = 64


class _Reader(Protocol):
    """What reading a record needs (a Host, or the cleanup's OsDisk)."""

    def lstat(self, path: str, *, safe: bool = False) -> Stat: ...

    def read_file(self, path: str, *, safe: bool = False) -> bytes: ...


def activity_path(user_hash: str) -> str:
    return f"{paths.shadow(user_hash)}/{ACTIVITY_FILE}"


def record_activity(host: Host, user_hash: str, when_ns: int | None = None) -> str | None:
    """Write the user's record (now, unless ``when_ns``). Best effort, never raises for the
    filesystem: returns a one-line warning when it could not write, else None. ``safe=True``:
    a symlink planted at the record's place is not followed (ELOOP)."""
    stamp = time.time_ns() if when_ns is None else when_ns
    path = activity_path(user_hash)
    try:
        host.write_file(path, f"{stamp}\n".encode("ascii"), mode=0o600, safe=True)
    except OSError as exc:
        return f"could not record the activity of {user_hash} at {path}: {exc.strerror or exc}"
    return None


def read_activity(host: _Reader, user_hash: str) -> int | None:
    """The user's last activity in ns since the epoch, or None (missing, unreadable, a symlink,
    not a number)."""
    path = activity_path(user_hash)
    try:
        st = host.lstat(path, safe=True)
        if not st.is_file or st.size > MAX_RECORD:
            return None
        text = host.read_file(path, safe=True)[:MAX_RECORD]
    except OSError:
        return None
    try:
        value = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return value if value >= 0 else None
