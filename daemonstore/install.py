"""``daemonstore install``: the system files that make daemonstore a system (docs/architecture.md
§10), rendered here as data and written idempotently under a prefix (DESTDIR style).

* ``/etc/dbus-1/system.d/*.conf``: every policy shipped in ``daemonstore/dbus/policy`` (default
  deny; root owns the names and may call everything; chronos Chrome's methods), and with
  ``daemon_users`` a ``daemonstore-<user>.conf`` per user granting the daemon role's session
  queries (:mod:`daemonstore.dbus.grants`; cryptohome-sim reads the same files);
* ``/etc/tmpfiles.d/daemonstore.conf``: ``/run/daemon-store{,-cache}`` 0755 root:root at boot
  (docs/chromeos.md §1.2: ChromeOS's tmpfiles.d makes them before chromeos_startup);
* ``/etc/init/daemonstore-startup.conf`` and ``daemonstore-hook.conf``: upstart jobs, startup as a
  task run before ``boot-services`` (where chromeos_startup's step sits), the hook respawned once
  dbus is up;
* ``/etc/systemd/system/daemonstore-startup.service`` (a oneshot ordered before the display and
  session managers) and ``daemonstore-hook.service`` (``Type=notify``: the hook sends
  ``READY=1`` once it listens).

Everything lands under ``/etc``, so a read-only ``/usr`` is no obstacle. A file whose content is
already right is left alone; a changed one is replaced atomically (write, fsync, rename), never
through a symlink planted at its name.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from daemonstore.dbus.grants import check_daemon_user, grant_file_name, render_grant

__all__ = ["SystemFile", "install", "system_files"]

DBUS_DIR = "/etc/dbus-1/system.d"
TMPFILES = "/etc/tmpfiles.d/daemonstore.conf"
UPSTART_DIR = "/etc/init"
SYSTEMD_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class SystemFile:
    path: str  # absolute, without the prefix
    content: str
    mode: int = 0o644


def find_bindir() -> str:
    """Where the console scripts are: next to this Python (a venv's bin/), else on PATH."""
    here = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(here, "daemonstore")):
        return here
    found = shutil.which("daemonstore")
    return os.path.dirname(found) if found else "/usr/bin"


def _policies() -> list[SystemFile]:
    folder = resources.files("daemonstore.dbus") / "policy"
    return [SystemFile(f"{DBUS_DIR}/{item.name}", item.read_text(encoding="utf-8"))
            for item in sorted(folder.iterdir(), key=lambda i: i.name)
            if item.name.endswith(".conf")]


TMPFILES_TEXT = """\
# daemonstore: the daemon-store roots (docs/chromeos.md §1.2); daemonstore-startup mounts
# /run/daemon-store{,-cache}/<daemon> below them at boot.
d /run/daemon-store 0755 root root -
d /run/daemon-store-cache 0755 root root -
"""

UPSTART_STARTUP = """\
# daemonstore: chromeos_startup's daemon-store step. Every /etc/daemon-store/<d> template
# becomes shared /run/daemon-store{{,-cache}}/<d> mounts before any daemon starts.
description "Mount the daemon stores"
author "daemonstore"

start on starting boot-services
task

exec {bindir}/daemonstore-startup --system
"""

UPSTART_HOOK = """\
# daemonstore: the session hook (store binds on SessionStateChanged), for a cryptohome that
# mounts vaults without the daemon stores.
description "Daemon-store session hook"
author "daemonstore"

start on started dbus
stop on stopping dbus
respawn

exec {bindir}/daemonstore hook --system
"""

SYSTEMD_STARTUP = """\
[Unit]
Description=Mount the daemon stores (/run/daemon-store{{,-cache}}/<daemon>)
Documentation=https://chromium.googlesource.com/chromiumos/docs/+/HEAD/sandboxing.md
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service
Before=sysinit.target shutdown.target display-manager.service systemd-logind.service
Conflicts=shutdown.target
ConditionPathIsDirectory=/etc/daemon-store

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={bindir}/daemonstore-startup --system

[Install]
WantedBy=sysinit.target
"""

SYSTEMD_HOOK = """\
[Unit]
Description=Daemon-store session hook (store binds on SessionStateChanged)
Requires=dbus.service
After=dbus.service daemonstore-startup.service
Wants=daemonstore-startup.service
Before=display-manager.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={bindir}/daemonstore hook --system
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def _grants(daemon_users: Sequence[str]) -> list[SystemFile]:
    """A grant file per daemon user (each once, in the order given)."""
    users = list(dict.fromkeys(check_daemon_user(u) for u in daemon_users))
    return [SystemFile(f"{DBUS_DIR}/{grant_file_name(u)}", render_grant(u)) for u in users]


def system_files(bindir: str | None = None,
                 daemon_users: Sequence[str] = ()) -> list[SystemFile]:
    """Every file ``install`` writes (paths without the prefix), in order. A bad daemon user
    is :class:`daemonstore.dbus.grants.BadDaemonUser`, before anything is written."""
    b = bindir or find_bindir()
    return [*_policies(), *_grants(daemon_users),
            SystemFile(TMPFILES, TMPFILES_TEXT),
            SystemFile(f"{UPSTART_DIR}/daemonstore-startup.conf", UPSTART_STARTUP.format(bindir=b)),
            SystemFile(f"{UPSTART_DIR}/daemonstore-hook.conf", UPSTART_HOOK.format(bindir=b)),
            SystemFile(f"{SYSTEMD_DIR}/daemonstore-startup.service",
                       SYSTEMD_STARTUP.format(bindir=b)),
            SystemFile(f"{SYSTEMD_DIR}/daemonstore-hook.service", SYSTEMD_HOOK.format(bindir=b))]


def _current(path: str) -> bytes | None:
    """The file's bytes, None when missing or not a regular file (a symlink is not read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read() if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else None


def _write(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.daemonstore-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)  # replaces a symlink at ``path`` itself, never its target
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def install(prefix: str = "/", *, bindir: str | None = None, dry_run: bool = False,
            daemon_users: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Write :func:`system_files` under ``prefix``; ``(path, "wrote"|"unchanged")`` for each
    (``"would write"`` with ``dry_run``). OSError (with the path) when one cannot be written;
    the files before it are written. A grant file of a user not named now is left alone (a
    daemon removed is its package's to clean up)."""
    done = []
    for f in system_files(bindir, daemon_users):
        path = os.path.join(prefix, f.path.lstrip("/"))
        data = f.content.encode()
        try:
            st = os.lstat(path)
            same = (_current(path) == data and (st.st_mode & 0o7777) == f.mode)
        except FileNotFoundError:
            same = False
        if same:
            done.append((path, "unchanged"))
            continue
        if not dry_run:
            _write(path, data, f.mode)
        done.append((path, "would write" if dry_run else "wrote"))
    return done
