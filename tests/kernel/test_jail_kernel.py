"""``daemonstore jail`` on the real kernel (issue "namespace helper", Done when): a process started
with the documented recipe sees a user's store appear at sign-in and vanish at sign-out, and a
mount it makes under its /run never appears outside. Everything runs inside run_in_sandbox's
forked child (a private mount namespace on a tmpfs); the jailed process is a child of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemonstore import mountinfo, paths
from daemonstore.boot.apply import run_startup
from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.session import sign_in, sign_out

pytestmark = pytest.mark.kernel

DAEMONSTORE = str(Path(sys.executable).with_name("daemonstore"))
USER_HASH = paths.sanitize_username(b"0123456789abcdef", "alice@example.com")

# The jailed command: answers one request per stdin line, so the test can ask what it sees
# between the sign-in steps that the sandbox child performs outside the jail.
DAEMON = r"""
import os, subprocess, sys
root, h = sys.argv[1], sys.argv[2]
store = f"{root}/run/daemon-store/foo/{h}"
def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "see":
        print(f"{mounted(store)} {os.path.isdir(store)}", flush=True)
    elif cmd == "write":
        with open(f"{store}/{arg}", "w") as f:
            f.write("from the jail")
        print("ok", flush=True)
    elif cmd == "mountmine":
        os.makedirs(f"{root}/run/mine", exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "mine", f"{root}/run/mine"], check=True)
        print(mounted(f"{root}/run/mine"), flush=True)
    elif cmd == "quit":
        break
"""


def _boot(host: KernelHost) -> None:
    host.mkdir("/etc/daemon-store/foo", 0o700, parents=True)
    host.mkdir("/home/.shadow", 0o711, parents=True)
    host.write_file(paths.SALT, b"0123456789abcdef")
    _, report = run_startup(host)
    assert report.complete


def _story(host: KernelHost) -> dict[str, object]:
    _boot(host)
    argv = [DAEMONSTORE, "jail", "--root", host.root, "-v", "-Kslave",
            "-k", "tmpfs,/run,tmpfs,MS_NOSUID|MS_NODEV|MS_NOEXEC",
            "-k", "/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC",
            "--", sys.executable, "-c", DAEMON, host.root, USER_HASH]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(cmd: str) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    out: dict[str, object] = {"ready": proc.stdout.readline().strip()}
    try:
        out["before"] = ask("see")
        sign_in(host, USER_HASH)
        out["signed_in"] = ask("see")
        out["write"] = ask("write note.txt")
        out["in_vault"] = host.read_file(
            f"{paths.vault(USER_HASH)}/root/foo/note.txt").decode()
        out["mine_inside"] = ask("mountmine")
        outside = mountinfo.parse(host.mountinfo())
        out["mine_outside"] = any(e.source == "mine" for e in outside)
        out["jail_tmpfs_outside"] = any(e.mount_point == "/run" for e in outside)
        sign_out(host, USER_HASH)
        out["signed_out"] = ask("see")
        ask("quit")
    finally:
        proc.stdin.close()
        out["rc"] = proc.wait(timeout=20)
    return out


def test_documented_jail_sees_sign_in_and_leaks_nothing() -> None:
    out = run_in_sandbox(_story)
    assert out["ready"] == "ready"
    assert out["before"] == "False False"
    assert out["signed_in"] == "True True"  # propagated into the jail's slave copy
    assert out["write"] == "ok" and out["in_vault"] == "from the jail"
    assert out["mine_inside"] == "True" and out["mine_outside"] is False
    assert out["jail_tmpfs_outside"] is False
    # the umount propagated in too; the empty directory stays, as on ChromeOS (§7 item 1)
    assert out["signed_out"] == "False True"
    assert out["rc"] == 0


def _refuse(host: KernelHost) -> tuple[int, str]:
    res = subprocess.run([DAEMONSTORE, "jail", "--root", host.root, "-v", "-k",
                          "/nonexistent,/x,none,MS_BIND", "--", "true"],
                         capture_output=True, text=True)
    return res.returncode, res.stderr


def test_a_failing_jail_step_names_the_step_and_exits_1() -> None:
    code, err = run_in_sandbox(_refuse)
    assert code == 1
    assert "open_tree /nonexistent" in err and "No such file" in err


def test_jail_refuses_the_initial_namespace() -> None:
    """Run in the pytest process itself: KernelHost refuses before anything is mounted."""
    res = subprocess.run([DAEMONSTORE, "jail", "--root", "/tmp", "-v", "--", "true"],
                         capture_output=True, text=True, env={**os.environ})
    assert res.returncode == 2 and "cannot use --root" in res.stderr
