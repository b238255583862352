"""Start and stop a private ``dbus-daemon`` (process management; no D-Bus protocol here).

Used by the tests (``daemonstore.testing.bus``), by ``cryptohome-sim --spawn-bus`` and by the demo.
Never touches the machine's own buses: the daemon gets a generated configuration that listens on
a unix socket in a fresh temporary directory, and :meth:`PrivateBus.stop` ends exactly the pid it
started (wait for the daemon's printed address instead of sleeping, as python-dbusmock does).

The configuration is ``private-bus.conf.in`` (Debian's system-bus default policy) including the
shipped policy files ``daemonstore/dbus/policy/*.conf`` (who may own and call what), the very
files ``daemonstore install`` puts into ``/etc/dbus-1/system.d/``, and a daemon role grant file
per daemon user, as ``daemonstore install --daemon-user`` writes it there.
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from daemonstore.dbus.grants import grant_file_name, render_grant
from daemonstore.errors import DaemonStoreError

#: the files a real system has in /etc/dbus-1/system.d/ (package daemonstore.dbus, policy/)
POLICY_FILES = ("org.chromium.UserDataAuth.conf", "org.chromium.SessionManager.conf")
CONFIG_TEMPLATE = "private-bus.conf.in"
#: the file name of start_private_bus's extra_policy (sorts after the shipped files)
EXTRA_POLICY = "zz-extra.conf"
SOCKET_NAME = "system_bus_socket"
#: where .ci/run's Debian package `dbus` puts it, if it is not on PATH
_DBUS_DAEMON_FALLBACK = "/usr/bin/dbus-daemon"



class BusError(DaemonStoreError, RuntimeError):
    """The private bus could not be started (the message says why, with dbus-daemon's stderr)."""


def find_dbus_daemon() -> str | None:
    """Path of ``dbus-daemon``, or None when it is not installed."""
    found = shutil.which("dbus-daemon")
    if found:
        return found
    return _DBUS_DAEMON_FALLBACK if os.access(_DBUS_DAEMON_FALLBACK, os.X_OK) else None


def _package_text(name: str) -> str:
    return resources.files("cryptohome_sim").joinpath(name).read_text(encoding="utf-8")


def policy_text(name: str) -> str:
    """One shipped policy file, as installed."""
    if name not in POLICY_FILES:
        raise ValueError(f"no policy file {name!r}; one of {', '.join(POLICY_FILES)}")
    return resources.files("daemonstore.dbus").joinpath("policy", name).read_text(
        encoding="utf-8")


def render_policy(name: str, privileged_user: str = "root", chronos: str = "chronos") -> str:
    """Policy file ``name`` with ``privileged_user`` in place of root and ``chronos`` in place
    of chronos.

    The shipped files name root and chronos; a test suite run by an ordinary user must still be
    able to own the names, so it substitutes itself; a machine without a chronos account gives a
    uid (dbus-daemon accepts a number in ``user=``). Only the ``<policy user=...>`` attributes
    change.
    """
    text = policy_text(name)
    for shipped, wanted in (("root", privileged_user), ("chronos", chronos)):
        if wanted != shipped:
            text = text.replace(f'<policy user="{shipped}">', f'<policy user="{escape(wanted)}">')
    return text


def render_config(socket_path: str, policy_dir: str) -> str:
    """The full bus configuration for a socket path and a directory of policy files."""
    return Template(_package_text(CONFIG_TEMPLATE)).substitute(
        socket=escape(socket_path), policy_dir=escape(policy_dir))


def current_user() -> str:
    """Name of the effective user (what a policy's ``user=`` must say to match us)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)  # dbus-daemon also accepts a numeric uid in user=


@dataclass
class PrivateBus:
    """A running private ``dbus-daemon``. Use as a context manager, or call :meth:`stop`."""

    address: str
    pid: int
    directory: Path
    privileged_user: str
    chronos: str
    _process: subprocess.Popen[bytes] = field(repr=False)
    daemon_users: tuple[str, ...] = ()

    @property
    def socket_path(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def policy_dir(self) -> Path:
        """Its ``system.d``: the policy files and the daemon role's grant files."""
        return self.directory / "system.d"

    def stop(self, timeout: float = 5.0) -> None:
        """End the daemon this object started (only that pid) and remove its directory."""
        proc = self._process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_private_bus(*, privileged_user: str = "root", chronos: str = "chronos",
                      timeout: float = 10.0, dbus_daemon: str | None = None,
                      extra_policy: str | None = None,
                      daemon_users: tuple[str, ...] = ()) -> PrivateBus:
    """Start ``dbus-daemon --nofork --print-address`` on a private socket and wait until ready.

    ``privileged_user`` is who the policy treats as root, ``chronos`` who it treats as chronos
    (see :func:`render_policy`). ``extra_policy`` is one more policy file, included after
    the shipped ones (a test opening the bus to everyone, to show the service's own caller
    check holds alone). ``daemon_users`` get the daemon role: a grant file each in
    :attr:`PrivateBus.policy_dir`, which the service reads too. The
    directory is made 0755 and the socket 0666 so that an unprivileged uid can connect (the
    policy, not the file mode, decides what it may do). Raises :class:`BusError`.
    """
    exe = dbus_daemon or find_dbus_daemon()
    if exe is None:
        raise BusError("dbus-daemon not found (install the Debian package 'dbus')")
    directory = Path(tempfile.mkdtemp(prefix="cryptohome-sim-bus-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        os.chmod(directory, 0o755)
        policy_dir = directory / "system.d"
        policy_dir.mkdir()
        for name in POLICY_FILES:
            (policy_dir / name).write_text(render_policy(name, privileged_user, chronos),
                                           encoding="utf-8")
        for user in daemon_users:
            grant = policy_dir / grant_file_name(user)
            grant.write_text(render_grant(user), encoding="utf-8")
            os.chmod(grant, 0o644)  # whatever the umask: the service takes no writable grant
        if extra_policy is not None:
            (policy_dir / EXTRA_POLICY).write_text(extra_policy, encoding="utf-8")
        config = directory / "bus.conf"
        config.write_text(render_config(str(directory / SOCKET_NAME), str(policy_dir)),
                          encoding="utf-8")
        with open(directory / "dbus-daemon.log", "wb") as log:
            proc = subprocess.Popen(
                [exe, f"--config-file={config}", "--nofork", "--print-address"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, close_fds=True)
        address = _read_address(proc, directory, timeout)
        os.chmod(directory / SOCKET_NAME, 0o666)
    except BaseException:
        if proc is not None:
            _reap(proc)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return PrivateBus(address=address, pid=proc.pid, directory=directory,
                      privileged_user=privileged_user, chronos=chronos, _process=proc,
                      daemon_users=tuple(daemon_users))


def _read_address(proc: subprocess.Popen[bytes], directory: Path, timeout: float) -> str:
    """The first stdout line is the address, printed once the socket listens."""
    if proc.stdout is None:
        raise BusError("dbus-daemon was started without a stdout pipe")
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise BusError(f"dbus-daemon printed no address in {timeout}s"
                           + _last_log_line(directory))
        chunk = os.read(fd, 4096)
        if not chunk:  # EOF: it closed stdout, i.e. it is exiting (maybe not reaped yet)
            try:
                status = f" with status {proc.wait(5)}"
            except subprocess.TimeoutExpired:
                status = ""
            raise BusError(f"dbus-daemon exited{status}" + _last_log_line(directory))
        buf += chunk
    return buf.decode().strip()


def _last_log_line(directory: Path) -> str:
    log = (directory / "dbus-daemon.log").read_text(errors="replace").strip()
    return f": {log.splitlines()[-1]}" if log else ""


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
