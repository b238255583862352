"""Install daemon templates on a Host, as a daemon's ebuild does (boot layer: writes only through
the Host it is given; model and kernel alike). The simulated worlds, cryptohome_sim's
``InstallDaemon``, the demo, tests and benchmarks all install templates here.

:func:`install_template` installs one valid template and its owner's ``/etc/passwd`` line.
:func:`install` seeds a whole tree: :data:`SAMPLE` mixes the real ChromeOS templates that pass
the contract (docs/chromeos.md §1.6) with one entry per reason to skip; :func:`many`
makes N valid templates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from daemonstore import paths
from daemonstore.boot.plan import PASSWD, ROOT_UID, read_system_uids
from daemonstore.host import Host

__all__ = ["SAMPLE", "SAMPLE_SKIPPED", "SAMPLE_USERS", "SAMPLE_VALID", "Entry",
           "add_system_user", "install", "install_template", "many", "passwd_line"]

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
    Entry("pvm", mode=0o770, uid=299, gid=299),              # group-writable: fine, as ChromeOS
    Entry("ghost", uid=4242, gid=4242),                      # owner not in /etc/passwd
    Entry(".hidden"),                                        # bad name
    Entry("README", FILE, mode=0o644),                       # a regular file: ignored
)
SAMPLE_VALID = ("biod", "crosvm", "kerberosd", "pvm", "session_manager", "shill")
SAMPLE_SKIPPED = ("linked", "everyone", "ghost", ".hidden")
SAMPLE_IGNORED = ("README",)


def passwd_line(name: str, uid: int, gid: int) -> str:
    """A system user's ``/etc/passwd`` line (no home, no login shell)."""
    return f"{name}:x:{uid}:{gid}::/dev/null:/bin/false\n"


def passwd_text(users: Iterable[tuple[str, int]]) -> bytes:
    return "".join(passwd_line(name, uid, uid) for name, uid in users).encode()


def add_system_user(host: Host, name: str, uid: int, gid: int) -> None:
    """Append ``name``'s passwd line unless ``uid`` is root or already a system user (as
    :func:`daemonstore.boot.plan.read_system_uids` reads them: startup trusts a template's
    owner only if it is listed there)."""
    if uid != ROOT_UID and uid not in read_system_uids(host):
        host.write_file(PASSWD, passwd_line(name, uid, gid).encode(), append=True, safe=True)


def install_template(host: Host, name: str, uid: int, gid: int, mode: int) -> None:
    """Install ``/etc/daemon-store/<name>`` owned ``uid:gid`` with exactly ``mode`` (what the
    daemon's ebuild does): ``/etc`` and ``/etc/daemon-store`` are made 0755 when missing and a
    new owner gets its passwd line (:func:`add_system_user`). Symlinks are never followed."""
    _make_etc(host)
    add_system_user(host, name, uid, gid)
    template = paths.template(name)
    host.mkdir(template, mode, safe=True)
    _own(host, template, uid, gid, mode)


def install(host: Host, entries: Iterable[Entry] = SAMPLE,
            users: Iterable[tuple[str, int]] | None = SAMPLE_USERS) -> None:
    """Create ``/etc`` (0755), ``/etc/daemon-store`` (0755) and the entries, valid or not; write
    ``/etc/passwd`` unless ``users`` is None. Existing directories are kept."""
    _make_etc(host)
    if users is not None:
        host.write_file(PASSWD, passwd_text(users), safe=True)
    for e in entries:
        path = f"{paths.ETC_DAEMON_STORE}/{e.name}"
        if e.kind == SYMLINK:
            host.symlink(e.target, path)
            continue
        if e.kind == FILE:
            host.write_file(path, b"", mode=e.mode, safe=True)
        else:
            host.mkdir(path, e.mode, safe=True)
        _own(host, path, e.uid, e.gid, e.mode)


def _make_etc(host: Host) -> None:
    for path in ("/etc", paths.ETC_DAEMON_STORE):
        if not host.exists(path):
            host.mkdir(path, 0o755, safe=True)


def _own(host: Host, path: str, uid: int, gid: int, mode: int) -> None:
    """chown, then chmod: chown may clear setuid/setgid, and the entry keeps its exact mode."""
    host.chown(path, uid, gid, follow_symlinks=False, safe=True)
    host.chmod(path, mode, follow_symlinks=False, safe=True)


def many(count: int, prefix: str = "daemon") -> list[Entry]:
    """``count`` valid root-owned 0700 templates ``<prefix>000``, ``<prefix>001``, ..."""
    return [Entry(f"{prefix}{i:03d}") for i in range(count)]
