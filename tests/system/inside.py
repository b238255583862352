"""The container's side of test_container.py: run with default paths only (no --root, no
--system; the container is not the initial mount namespace) and print one JSON object of facts
for the outer test to check (to the fd given as its argument). Never run it anywhere else: the
container builder pivot_roots into a tmpfs first, and this script refuses a root that is not the
container's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

BIN = os.path.dirname(sys.executable)
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
    # default paths only: every client and service finds /run/dbus/system_bus_socket itself
    os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
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
    # a cryptohome without daemon-store support: the hook makes the store binds
    crypto = start("cryptohome-sim", "--no-daemon-stores", ready="serving",
                   log="cryptohome.log")
    hook = start("daemonstore", "hook", ready="listening on", log="hook.log")
    store = f"/run/daemon-store/{DAEMON}"
    daemon = start("daemonstore", "jail", "-v", "-Kslave",
                   "-k", "tmpfs,/run,tmpfs,MS_NOSUID|MS_NODEV|MS_NOEXEC",
                   "-k", f"{store},{store},none,MS_BIND|MS_REC",
                   "--", sys.executable, "-c", "import time; time.sleep(300)", log="daemon.log")
    pid = str(daemon.pid)
    wait(lambda: store in mount_points(pid) and "/run" in mount_points(pid),
         "the daemon's namespace")

    r = run("daemonstore", "login", "alice@example.com")
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
    st = os.stat(f"/home/.shadow/{h}/mount/root/{DAEMON}")
    facts["owner_mode"] = [st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)]

    # uid 65534: the policy refuses the first call of a sign-in
    r = run("daemonstore", "login", "mallory@example.com", user=65534)
    facts["nobody_login"] = [r.returncode, r.stderr.strip()]

    r = run("daemonstore", "status", "--json")
    facts["status"] = [r.returncode, json.loads(r.stdout) if r.stdout.startswith("{") else
                       r.stdout, r.stderr]

    facts["carol"] = carol(pid)

    # StopSession ends every session (ChromeOS has no per-user sign-out): alice and carol
    r = run("daemonstore", "logout")
    facts["logout"] = [r.returncode, r.stdout.strip(), r.stderr.strip()]
    facts["after_logout_daemon"] = [m for m in mount_points(pid) if m.startswith(store + "/")]
    facts["after_logout_root"] = [m for m in mount_points()
                                  if m.startswith(("/home/.shadow/", store + "/"))]

    facts["default"] = default_cryptohome(crypto, pid)

    hook.terminate()
    facts["hook_exit"] = hook.wait(10)
    facts["hook_log"] = read("hook.log").splitlines()


def carol(pid: str) -> dict[str, Any]:
    """A vault unmounted behind the session manager's back (its store binds left): the hook's
    mount-table watch removes them without any signal."""
    out: dict[str, Any] = {}
    r = run("daemonstore", "login", "carol@example.com")
    out["login"] = r.returncode
    target = run("daemonstore", "path", DAEMON, "carol@example.com").stdout.strip()
    h = target.rsplit("/", 1)[1]
    wait(lambda: target in mount_points(pid), "carol's store in the daemon")
    mine = [m for m in mount_points() if h in m and not m.startswith("/run/daemon-store")]
    mine.append("/home/chronos/user") if "/home/chronos/user" in mount_points() else None
    out["daemon_saw"] = target in mount_points(pid)
    t0 = time.monotonic()
    for m in reversed(mine):
        subprocess.run(["umount", m], check=False)
    wait(lambda: target not in mount_points(pid), "carol's store gone from the daemon")
    out["seconds"] = time.monotonic() - t0
    # the hook unbinds her 4 store binds one after another and logs once it is done: the first
    # umount already takes the target from the daemon, so wait for the rest (it flaked)
    wait(lambda: "unbound 4 stores of" in read("hook.log"), "the hook's report on carol")
    out["left_in_root"] = [m for m in mount_points() if h in m]
    return out


def default_cryptohome(crypto: subprocess.Popen[str], pid: str) -> dict[str, Any]:
    """cryptohome-sim restarted in its default mode (it binds the stores itself, as ChromeOS's
    cryptohome does): the hook follows the new owner of the names and binds nothing twice."""
    out: dict[str, Any] = {}
    crypto.terminate()
    out["stopped"] = crypto.wait(10)
    start("cryptohome-sim", ready="serving", log="cryptohome-default.log")
    r = run("daemonstore", "login", "bob@example.com")
    out["login"] = [r.returncode, r.stderr.strip()]
    target = run("daemonstore", "path", DAEMON, "bob@example.com").stdout.strip()
    out["hash"] = target.rsplit("/", 1)[1]
    wait(lambda: target in mount_points(pid), "bob's store in the daemon")
    out["binds_in_root"] = mount_points().count(target)
    time.sleep(0.2)  # room for a (wrong) second bind by the hook to show up
    out["binds_in_root_later"] = mount_points().count(target)
    r = run("daemonstore", "logout")
    out["logout"] = r.returncode
    out["after_logout_daemon"] = [m for m in mount_points(pid) if out["hash"] in m]
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
    # the facts go to the fd the outer test passed (else stdout)
    with os.fdopen(int(sys.argv[1]), "w") if len(sys.argv) > 1 else sys.stdout as out:
        out.write(json.dumps(facts) + "\n")
    sys.exit(code)
