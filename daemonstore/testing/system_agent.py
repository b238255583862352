"""The system world's agent: the program :mod:`daemonstore.testing.system` runs inside its
container (``python -I system_agent.py FD``), the device's side of the control channel.

One JSON object a line on the socket ``FD`` each way: a request ``{"op": ..., ...}``, a reply
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``; requests are served in
order, one at a time. It boots the device the way ChromeOS's init does, with default paths only
(no ``--root``, no ``--system``: this is a container, not the initial namespace): ``daemonstore
install`` (with the daemon role for each template's owner), the templates,
``daemonstore-startup``, ``dbus-daemon --system`` on the installed policies, ``cryptohome-sim
--no-daemon-stores`` and ``daemonstore hook`` (or cryptohome-sim binding the stores itself). It
signs users in and out with the client ``daemonstore login/logout`` use (ChromeOS's D-Bus calls,
without a new Python each time) and waits for the store binds to come and go, watching
``/proc/self/mountinfo`` (``POLLPRI``, no polling); it starts processes (the parent builds their
``daemonstore jail`` command), their output in a file each, and stops them by pid.

Standard library only at import (it starts in the container before anything else); the bus
client is imported for the requests that need it. Never run it outside the container: it
refuses a ``/`` that is not the container's tmpfs.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

LOGS = "/tmp/daemonstore-system"
STORE_BASES = ("/run/daemon-store", "/run/daemon-store-cache")
HASH = re.compile(r"[0-9a-f]{40}")
BUS = "unix:path=/run/dbus/system_bus_socket"
SERVICE_READY = 15.0  # seconds a service gets to say it is ready


class Failed(Exception):
    """A request that cannot be done: the reply's error."""


class Agent:
    def __init__(self) -> None:
        self.daemons: dict[str, tuple[int, int, int]] = {}
        self.services: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.spawned: dict[int, tuple[subprocess.Popen[bytes], str]] = {}
        self.booted = False
        self.env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
        os.makedirs(LOGS, exist_ok=True)

    # ---- requests ------------------------------------------------------------------------------
    def op_boot(self, hook: bool = True) -> dict[str, Any]:
        if self.booted:
            raise Failed("already booted")
        out: dict[str, Any] = {"install": self.install()}
        out["startup"] = self.startup()
        os.makedirs("/run/dbus", exist_ok=True)
        self.start_service("dbus", ["dbus-daemon", "--system", "--nofork", "--nopidfile"],
                           lambda: os.path.exists("/run/dbus/system_bus_socket"))
        if hook:  # a cryptohome without daemon-store support: the hook makes the store binds
            self.start_service("cryptohome", ["cryptohome-sim", "--no-daemon-stores"],
                               self.log_says("cryptohome", "serving"))
            self.start_service("hook", ["daemonstore", "hook"],
                               self.log_says("hook", "listening on"))
        else:  # cryptohome binds the stores itself, as ChromeOS's does
            self.start_service("cryptohome", ["cryptohome-sim"],
                               self.log_says("cryptohome", "serving"))
        self.booted = True
        return out

    def op_install_daemon(self, name: str, uid: int, gid: int, mode: int,
                          startup: bool = True) -> dict[str, Any]:
        _add_account("/etc/passwd", name, uid, f"{name}:x:{uid}:{gid}::/nonexistent:"
                     "/usr/sbin/nologin")
        _add_account("/etc/group", name, gid, f"{name}:x:{gid}:")
        template = f"/etc/daemon-store/{name}"
        os.makedirs(template, exist_ok=True)
        os.chown(template, uid, gid)
        os.chmod(template, mode)
        self.daemons[name] = (uid, gid, mode)
        if not self.booted:
            return {}
        # the daemon asks session_manager as its own user: its grant, then both layers re-read
        # the grant files (dbus-daemon, then cryptohome-sim), as a package install would
        self.install()
        self.bus(lambda client: client.call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "ReloadConfig", "", []))
        self.reload_cryptohome()
        if not startup:
            return {}
        report = self.startup()
        missing = [s for s in (f"{b}/{name}" for b in STORE_BASES) if s not in mount_points()]
        if missing:
            raise Failed(f"startup did not make {', '.join(missing)}: {report}")
        return {"startup": report}

    def op_run(self, argv: list[str], user: int | None = None,
               timeout: float = 60) -> dict[str, Any]:
        r = subprocess.run(argv, capture_output=True, timeout=timeout, env=self.env, user=user)
        return {"rc": r.returncode, "stdout": r.stdout.decode(errors="replace"),
                "stderr": r.stderr.decode(errors="replace")}

    def op_login(self, user: str, guest: bool = False, timeout: float = 30) -> str:
        """Sign in as ``daemonstore login`` does (its Client, ChromeOS's calls); return once
        the store binds of every daemon are mounted (they follow "started" with the hook)."""
        result = self.bus(lambda client: client.login(user, guest=guest))
        user_hash = str(result.user_hash)
        if not guest:
            stores = mount_points()
            want = {f"{b}/{d}/{user_hash}" for d in self.daemons for b in STORE_BASES
                    if f"{b}/{d}" in stores}
            wait_mounts(lambda mps: want <= mps, f"the store binds of {user}", timeout)
        return user_hash

    def op_logout(self, timeout: float = 30) -> bool:
        """``daemonstore logout``'s flow: ``StopSession``, then ``Unmount{}``; return once no
        mount of the users signed in before is left (the hook unbinds on "stopped")."""
        before = {h for mp in mount_points() for h in HASH.findall(mp)}
        result = self.bus(lambda client: client.logout())
        wait_mounts(lambda mps: not any(h in mp for mp in mps for h in before),
                    "every user's mounts to go", timeout)
        return bool(result.had_session)

    def op_hash(self, user: str) -> str:
        """``GetSanitizedUsername`` (it makes the salt if there is none)."""
        return str(self.bus(lambda client: client.sanitized_username(user)))

    def bus(self, call: Callable[[Any], Any]) -> Any:
        """One call flow on a fresh connection to the system bus (daemonstore.dbus.client,
        imported on first use: the agent starts before the bus exists)."""
        import asyncio

        from daemonstore.dbus.client import Client, ClientError

        async def go() -> Any:
            client = await Client.connect(BUS)
            async with client:
                return await call(client)

        try:
            return asyncio.run(go())
        except ClientError as exc:
            raise Failed(str(exc)) from None

    def op_spawn(self, argv: list[str], exec_argv: list[str], env: dict[str, str] | None = None,
                 timeout: float = 15) -> dict[str, Any]:
        """Start ``argv`` (``daemonstore jail ... -- exec_argv``); reply once it has exec'd
        ``exec_argv`` in its jail, or fail with its output if it ends first."""
        n = len(self.spawned) + 1
        log = f"{LOGS}/spawn-{n}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={**self.env, **(env or {})},
                                    start_new_session=True)
        self.spawned[n] = (proc, log)
        deadline = time.monotonic() + timeout
        while not _execd(proc.pid, argv):
            if proc.poll() is not None:
                # ended before its exec was seen: the jail failed (click's "Error: ..." from
                # daemonstore jail), or the command ran and was quick
                if any(ln.startswith("Error: ") for ln in _read(log).splitlines()):
                    raise Failed(f"exited with status {proc.returncode} before it ran "
                                 f"{exec_argv[0]}:\n{_read(log)}")
                break
            if time.monotonic() > deadline:
                self.op_stop(n)
                raise Failed(f"did not exec {exec_argv[0]} within {timeout} s:\n{_read(log)}")
            time.sleep(0.002)  # a fork+exec of python: no event tells when exec happened
        return {"id": n, "pid": proc.pid}

    def op_poll(self, id: int) -> int | None:
        return self.spawned[id][0].poll()

    def op_wait(self, id: int, timeout: float | None = None) -> int:
        try:
            return self.spawned[id][0].wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f"still running after {timeout} s") from None

    def op_stop(self, id: int, timeout: float = 5) -> int:
        proc = self.spawned[id][0]
        return _stop(proc, timeout)

    def op_output(self, id: int) -> str:
        return _read(self.spawned[id][1])

    def op_logs(self) -> dict[str, str]:
        return {name: _read(f"{LOGS}/{name}.log") for name, _ in self.services}

    def op_shutdown(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spawned": {}, "services": {}}
        for n, (proc, log) in self.spawned.items():
            out["spawned"][n] = [_stop(proc, 5), _read(log)]
        for name, proc in reversed(self.services):
            out["services"][name] = [_stop(proc, 5), _read(f"{LOGS}/{name}.log")]
        self.spawned.clear()
        self.services.clear()
        return out

    # ---- helpers -------------------------------------------------------------------------------
    def run_ok(self, argv: list[str]) -> dict[str, Any]:
        r = self.op_run(argv)
        if r["rc"] != 0:
            raise Failed(f"{' '.join(argv)} exited {r['rc']}: {r['stderr'] or r['stdout']}")
        return r

    def daemon_users(self) -> list[str]:
        """The template owners but root (root may call everything): the daemon role's users,
        by their passwd name here (the uid if it has none)."""
        with open("/etc/passwd") as f:
            names = {e[2]: e[0] for e in (ln.split(":") for ln in f.read().splitlines())
                     if len(e) > 2}
        owners = dict.fromkeys(str(uid) for uid, _gid, _mode in self.daemons.values())
        return [names.get(uid, uid) for uid in owners if uid != "0"]

    def install(self) -> str:
        """``daemonstore install``, a ``--daemon-user`` per template owner (idempotent)."""
        argv = ["daemonstore", "install"]
        for user in self.daemon_users():
            argv += ["--daemon-user", user]
        return str(self.run_ok(argv)["stdout"])

    def reload_cryptohome(self) -> None:
        """SIGHUP to cryptohome-sim; return once it has re-read the grant files (its line)."""
        found = [p for name, p in self.services if name == "cryptohome"]
        if not found or found[0].poll() is not None:
            raise Failed("cryptohome-sim is not running")
        log = f"{LOGS}/cryptohome.log"
        line = "cryptohome-sim: daemon users from "
        seen = _read(log).count(line)
        found[0].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + SERVICE_READY
        while _read(log).count(line) <= seen:
            if found[0].poll() is not None or time.monotonic() > deadline:
                raise Failed(f"cryptohome-sim did not reload its grants:\n{_read(log)}")
            time.sleep(0.005)  # its own log line: no event to wait on

    def startup(self) -> str:
        r = self.op_run(["daemonstore-startup"])
        if r["rc"] == 2:
            raise Failed(f"daemonstore-startup cannot run: {r['stderr']}")
        return str(r["stdout"] + r["stderr"])

    def start_service(self, name: str, argv: list[str], ready: Callable[[], bool]) -> None:
        log = f"{LOGS}/{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=self.env)
        self.services.append((name, proc))
        deadline = time.monotonic() + SERVICE_READY
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"{' '.join(argv)} did not get ready (status {proc.poll()}):\n"
                             + _read(log))
            time.sleep(0.005)  # a service's own log line: no event to wait on

    def log_says(self, name: str, text: str) -> Callable[[], bool]:
        return lambda: text in _read(f"{LOGS}/{name}.log")


def _add_account(db: str, name: str, ident: int, line: str) -> None:
    with open(db) as f:
        entries = [ln.split(":") for ln in f.read().splitlines()]
    if any(e[0] == name or e[2] == str(ident) for e in entries if len(e) > 2):
        return
    with open(db, "a") as f:
        f.write(line + "\n")


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM to the pid, SIGKILL after ``timeout``; then SIGKILL what is left of its session
    (``start_new_session``: its own children, e.g. a shell's ``sleep``)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return int(proc.returncode)


def _execd(pid: int, argv: list[str]) -> bool:
    """Has ``daemonstore jail`` (``argv``) built its namespace and exec'd the command? Its
    mount namespace is no longer ours, and its command line no longer the jail's (the
    command may exec again at once, a shell's ``exec sleep``: compare with the jail's)."""
    jail = b"\0".join(a.encode() for a in argv[1:]) + b"\0"
    try:
        if os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            return False
        exe = os.readlink(f"/proc/{pid}/exe")  # fails for a zombie, whose cmdline is empty
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return exe != os.path.realpath(sys.executable) or (bool(cmdline)
                                                       and not cmdline.endswith(jail))


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def mount_points(text: str | None = None) -> set[str]:
    if text is None:
        with open("/proc/self/mountinfo") as f:
            text = f.read()
    return {line.split()[4] for line in text.splitlines()}


def wait_mounts(cond: Callable[[set[str]], bool], what: str, timeout: float) -> None:
    """Until ``cond(mount points)``: re-read mountinfo each time the kernel says the mount
    table changed (POLLPRI on /proc/self/mountinfo, proc(5))."""
    fd = os.open("/proc/self/mountinfo", os.O_RDONLY)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        deadline = time.monotonic() + timeout
        while True:
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            if cond(mount_points(b"".join(chunks).decode(errors="surrogateescape"))):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"timed out after {timeout} s waiting for {what}")
            poller.poll(left * 1000)
    finally:
        os.close(fd)


def serve(sock: socket.socket) -> None:
    agent = Agent()
    rfile = sock.makefile("rb")
    send(sock, {"ok": True, "result": {"pid": os.getpid()}})
    try:
        for line in rfile:
            request = json.loads(line)
            op = request.pop("op")
            try:
                result = getattr(agent, f"op_{op}")(**request)
                reply: dict[str, Any] = {"ok": True, "result": result}
            except Exception as exc:  # the reply carries it; the agent serves on
                reply = {"ok": False, "error": f"{op}: {type(exc).__name__}: {exc}"}
            send(sock, reply)
            if op == "shutdown":
                return
    finally:
        agent.op_shutdown()  # the parent is gone or done: nothing it started stays


def send(sock: socket.socket, reply: dict[str, Any]) -> None:
    sock.sendall(json.dumps(reply).encode() + b"\n")


def main() -> None:
    with open("/proc/self/mountinfo") as f:
        root = next(ln for ln in f if ln.split()[4] == "/")
    if " - tmpfs container " not in root:
        sys.exit(f"system_agent: / is not the container's tmpfs ({root.strip()}); refusing")
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
