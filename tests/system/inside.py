"""The container's side of test_container.py: run with default paths only (no --root, no
--system; the container is not the initial mount namespace) and print one JSON object of facts
for the outer test to check. Never run it anywhere else: container.sh pivot_roots into a tmpfs
first, and this script refuses a root that is not the container's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

BIN = os.path.dirname(sys.executable)
BUS_ENV = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/dbus/system_bus_socket"}
DAEMON = "sample"
facts: dict[str, Any] = {}
procs: list[subprocess.Popen[str]] = []


def run(*cmd: str, env: dict[str, str] | None = None, user: int | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, user=user)


def start(*cmd: str, env: dict[str, str] | None = None, ready: str | None = None,
          log: str) -> subprocess.Popen[str]:
    """Start a service with its output in /tmp/<log>; wait for ``ready`` in it."""
    out = open(f"/tmp/{log}", "w")  # noqa: SIM115 -- the service keeps it
    proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    procs.append(proc)
    if ready is not None:
        wait(lambda: ready in read(log), f"{log}: {ready!r}")
    return proc


def read(log: str) -> str:
    with open(f"/tmp/{log}") as f:
        return f.read()


def wait(cond: Any, what: str, timeout: float = 15) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - t0


def mount_points(pid: str = "self") -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f]


def main() -> None:
    assert os.stat("/").st_dev != os.stat("/usr").st_dev, "not in the container"
    with open("/proc/self/mountinfo") as f:
        root_line = next(ln for ln in f if ln.split()[4] == "/")
    assert " - tmpfs container " in root_line, f"/ is not the container's tmpfs: {root_line}"

    r = run("daemonstore", "install")
    facts["install"] = [r.returncode, r.stdout.splitlines()]
    for name, uid, gid, mode in (("crash", 20125, 419, 0o3770), (DAEMON, 20200, 20200, 0o700)):
        path = f"/etc/daemon-store/{name}"
        os.makedirs(path)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    r = run("daemonstore-startup", "--json")
    facts["startup"] = [r.returncode, json.loads(r.stdout), r.stderr]
    r = run("daemonstore-startup")
    facts["startup_again"] = [r.returncode, r.stdout.strip()]

    os.makedirs("/run/dbus")
    start("dbus-daemon", "--system", "--nofork", "--nopidfile", log="dbus.log")
    wait(lambda: os.path.exists("/run/dbus/system_bus_socket"), "the system bus socket")
    start("cryptohome-sim", env=BUS_ENV, ready="serving", log="cryptohome.log")
    hook = start("daemonstore", "hook", ready="listening on", log="hook.log")
    store = f"/run/daemon-store/{DAEMON}"
    daemon = start("daemonstore", "jail", "-v", "-Kslave",
                   "-k", "tmpfs,/run,tmpfs,MS_NOSUID|MS_NODEV|MS_NOEXEC",
                   "-k", f"{store},{store},none,MS_BIND|MS_REC",
                   "--", sys.executable, "-c", "import time; time.sleep(300)", log="daemon.log")
    pid = str(daemon.pid)
    wait(lambda: store in mount_points(pid) and "/run" in mount_points(pid),
         "the daemon's namespace")

    # alice, the default: cryptohome binds the stores; the hook finds nothing to do
    r = run("daemonstore", "login", "alice@example.com", env=BUS_ENV)
    facts["login"] = [r.returncode, r.stdout.strip(), r.stderr.strip()]
    target = run("daemonstore", "path", DAEMON, "alice@example.com").stdout.strip()
    facts["alice_target"] = target
    wait(lambda: target in mount_points(pid), "alice's store in the daemon")
    facts["alice_binds_in_root"] = mount_points().count(target)
    facts["alice_binds_in_daemon"] = mount_points(pid).count(target)
    facts["daemon_store_copies"] = mount_points(pid).count(store)
    r = run("nsenter", "-t", pid, "-m", "sh", "-c", f"echo report > {target}/report.txt")
    facts["daemon_write"] = r.returncode
    h = target.rsplit("/", 1)[1]
    with open(f"/home/.shadow/{h}/mount/root/{DAEMON}/report.txt") as f:
        facts["in_vault"] = f.read()

    # uid 65534: the policy refuses the mount call
    r = run("daemonstore", "login", "mallory@example.com", env=BUS_ENV, user=65534)
    facts["nobody_login"] = [r.returncode, r.stderr.strip()]

    r = run("daemonstore", "status", "--json")
    facts["status"] = [r.returncode, json.loads(r.stdout) if r.stdout.startswith("{") else
                       r.stdout, r.stderr]

    # bob: a cryptohome without daemon-store support (its binds undone before StartSession);
    # the hook makes them on SessionStateChanged "started"
    facts["bob"] = asyncio.run(bob(pid))

    facts["carol"] = carol(pid)

    # StopSession ends every session (ChromeOS has no per-user sign-out): alice, bob, carol
    r = run("daemonstore", "logout", env=BUS_ENV)
    facts["logout"] = [r.returncode, r.stdout.strip(), r.stderr.strip()]
    facts["after_logout_daemon"] = [m for m in mount_points(pid) if m.startswith(store + "/")]
    facts["after_logout_root"] = [m for m in mount_points()
                                  if m.startswith(("/home/.shadow/", store + "/"))]

    hook.terminate()
    facts["hook_exit"] = hook.wait(10)
    facts["hook_log"] = read("hook.log").splitlines()


def carol(pid: str) -> dict[str, Any]:
    """A vault unmounted behind the session manager's back (its store binds left): the hook's
    mount-table watch removes them without any signal."""
    out: dict[str, Any] = {}
    r = run("daemonstore", "login", "carol@example.com", env=BUS_ENV)
    out["login"] = r.returncode
    target = run("daemonstore", "path", DAEMON, "carol@example.com").stdout.strip()
    h = target.rsplit("/", 1)[1]
    mine = [m for m in mount_points() if h in m and not m.startswith("/run/daemon-store")]
    mine.append("/home/chronos/user") if "/home/chronos/user" in mount_points() else None
    out["daemon_saw"] = target in mount_points(pid)
    t0 = time.monotonic()
    for m in reversed(mine):
        subprocess.run(["umount", m], check=False)
    wait(lambda: target not in mount_points(pid), "carol's store gone from the daemon")
    out["seconds"] = time.monotonic() - t0
    out["left_in_root"] = [m for m in mount_points() if h in m]
    return out


async def bob(pid: str) -> dict[str, Any]:
    from daemonstore.dbus.client import Client

    out: dict[str, Any] = {}
    target = run("daemonstore", "path", DAEMON, "bob@example.com").stdout.strip()
    async with await Client.connect(BUS_ENV["DBUS_SYSTEM_BUS_ADDRESS"]) as client:
        # cryptohome's half of a sign-in, as Chrome drives it (the session starts below)
        sid, _exists = await client.start_auth_session("bob@example.com")
        await client.create_persistent_user(sid)
        await client.prepare_persistent_vault(sid)
        await client.invalidate_auth_session(sid)
        for cache in ("-cache", ""):
            for name in ("crash", DAEMON):
                path = target.replace(f"/run/daemon-store/{DAEMON}/",
                                      f"/run/daemon-store{cache}/{name}/")
                if path in mount_points():
                    subprocess.run(["umount", path], check=True)
        out["before"] = [target in mount_points(), target in mount_points(pid)]
        t0 = time.monotonic()
        await client.start_session("bob@example.com")
        await asyncio.to_thread(wait, lambda: target in mount_points(pid), "bob's store")
        out["latency_s"] = time.monotonic() - t0
    out["binds_in_root"] = mount_points().count(target)
    st = os.stat(f"/home/.shadow/{target.rsplit('/', 1)[1]}/mount/root/{DAEMON}")
    out["owner_mode"] = [st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)]
    return out


if __name__ == "__main__":
    code = 0
    try:
        main()
    except BaseException as exc:  # report what happened, with the services' logs
        facts["error"] = f"{type(exc).__name__}: {exc}"
        facts["logs"] = {}
        for log in ("dbus.log", "cryptohome.log", "hook.log", "daemon.log"):
            try:
                facts["logs"][log] = read(log)
            except OSError:
                pass
        code = 1
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print(json.dumps(facts))
    sys.exit(code)
