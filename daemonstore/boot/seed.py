"""Seed a Host with a template tree for demos, tests and the benchmark (writes only through the
Host it is given; model and kernel alike).

:data:`SAMPLE` mixes the real ChromeOS templates that pass the contract (chromeos-facts.md §1,
"Templates") with one entry per reason to skip; :func:`many` makes N valid templates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from daemonstore import paths
from daemonstore.host import Host

__all__ = ["SAMPLE", "SAMPLE_SKIPPED", "SAMPLE_USERS", "SAMPLE_VALID", "Entry", "install", "many"]

DIR, FILE, SYMLINK = "dir", "file", "symlink"


@dataclass(frozen=True)
class Entry:
    """One entry of /etc/daemon-store: a directory (``mode``, ``uid``/``gid``), a regular file,
    or a symlink to ``target``."""

    name: str
    kind: str = DIR
    mode: int = 0o700
    uid: int = 0
    gid: int = 0
    target: str = ""


#: system users of the sample /etc/passwd (name, uid); ids as on a ChromeOS image
SAMPLE_USERS = (("root", 0), ("shill", 20104), ("biod", 282), ("kerberosd", 20131),
                ("crosvm", 299))

SAMPLE = (
    Entry("shill", uid=20104, gid=20104),
    Entry("biod", uid=282, gid=282),
    Entry("kerberosd", uid=20131, gid=20131),
    Entry("crosvm", mode=0o750, uid=299, gid=299),
    Entry("session_manager", mode=0o755),
    Entry("linked", SYMLINK, target="/etc"),                 # symlink: skipped
    Entry("everyone", mode=0o777),                           # world-writable: skipped
    Entry("pvm", mode=0o770, uid=299, gid=299),              # group-writable (real ChromeOS!)
    Entry("ghost", uid=4242, gid=4242),                      # owner not in /etc/passwd
    Entry(".hidden"),                                        # bad name
    Entry("README", FILE, mode=0o644),                       # not a directory
)
SAMPLE_VALID = ("biod", "crosvm", "kerberosd", "session_manager", "shill")
SAMPLE_SKIPPED = ("linked", "everyone", "pvm", "ghost", ".hidden", "README")


def passwd_text(users: Iterable[tuple[str, int]]) -> bytes:
    return "".join(f"{name}:x:{uid}:{uid}::/dev/null:/bin/false\n" for name, uid in users).encode()


def install(host: Host, entries: Iterable[Entry] = SAMPLE,
            users: Iterable[tuple[str, int]] | None = SAMPLE_USERS) -> None:
    """Create ``/etc`` (0755), ``/etc/daemon-store`` (0755) and the entries; write
    ``/etc/passwd`` unless ``users`` is None. Existing directories are kept."""
    for path in ("/etc", paths.ETC_DAEMON_STORE):
        if not host.exists(path):
            host.mkdir(path, 0o755)
    if users is not None:
        host.write_file("/etc/passwd", passwd_text(users))
    for e in entries:
        path = f"{paths.ETC_DAEMON_STORE}/{e.name}"
        if e.kind == SYMLINK:
            host.symlink(e.target, path)
            continue
        if e.kind == FILE:
            host.write_file(path, b"", mode=e.mode)
        else:
            host.mkdir(path, e.mode)
        host.chown(path, e.uid, e.gid)
        host.chmod(path, e.mode)  # chown may clear setgid; the template keeps its exact mode


def many(count: int, prefix: str = "daemon") -> list[Entry]:
    """``count`` valid root-owned 0700 templates ``<prefix>000``, ``<prefix>001``, ..."""
    return [Entry(f"{prefix}{i:03d}") for i in range(count)]
