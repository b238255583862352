"""``daemonstore login``/``logout`` against cryptohome_sim on a private bus (click's CliRunner;
the service runs in a background thread because the command runs its own asyncio loop)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner, Result

from cryptohome_sim.bus import PrivateBus
from daemonstore.cli import main
from daemonstore.dbus import names
from daemonstore.testing.bus import ThreadedCryptohome

pytestmark = pytest.mark.dbus

NOBODY = 65534


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _one_line(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_login_then_logout(cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    before = cryptohome_thread.call(lambda: (core.salt, core.host.mountinfo())[1])
    result = _run("login", "alice")
    assert result.exit_code == 0, result.output
    user_hash = cryptohome_thread.call(lambda: core.sanitized_username("alice"))
    assert _one_line(result).startswith(f"alice signed in: hash {user_hash}, ")
    assert cryptohome_thread.call(core.mounted_hashes) == [user_hash]
    assert cryptohome_thread.call(core.session_state) == names.STARTED
    assert cryptohome_thread.call(core.primary_session) == ("alice", user_hash)

    result = _run("logout", "alice")
    assert result.exit_code == 0, result.output
    assert _one_line(result).startswith("alice signed out: session stopped, ")
    assert cryptohome_thread.call(core.session_state) == names.STOPPED
    assert cryptohome_thread.call(core.host.mountinfo) == before
    calls = [c.method for c in cryptohome_thread.call(core.calls)
             if c.method != "GetSanitizedUsername"]
    assert calls == ["MountEx", "StartSession", names.SESSION_SIGNAL,
                     "StopSession", names.SESSION_SIGNAL, names.SESSION_SIGNAL, "Unmount"]


def test_explicit_address_wins(cryptohome_thread: ThreadedCryptohome,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS")
    result = _run("login", "bob", "--address", cryptohome_thread.address)
    assert result.exit_code == 0, result.output


def test_no_bus_address_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    result = _run("login", "alice")
    assert result.exit_code == 2
    assert "no bus: pass --address or set DBUS_SYSTEM_BUS_ADDRESS" in _one_line(result)


def test_unreachable_bus(tmp_path: object) -> None:
    result = _run("logout", "alice", "--address", f"unix:path={tmp_path}/no-socket")
    assert result.exit_code == 1
    assert "logout alice failed: cannot connect to the bus" in _one_line(result)


def test_bus_without_the_service(private_bus: PrivateBus) -> None:
    result = _run("login", "alice")
    assert result.exit_code == 1
    assert names.SERVICE_UNKNOWN in _one_line(result)


@pytest.mark.parametrize("user", ["", "bad\x01name"])
def test_malformed_user_is_bad_input(user: str) -> None:
    result = _run("login", user, "--address", "unix:path=/nonexistent")
    assert result.exit_code == 2
    assert "user name" in _one_line(result)


def test_sign_in_failure_reports_the_service_reason(
        cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    cryptohome_thread.call(lambda: core.inject_failure("MountEx", 4))
    result = _run("login", "alice")
    assert result.exit_code == 1
    line = _one_line(result)
    assert line.startswith("Error: login alice failed: MountEx: "
                           f"{names.MOUNT_ERROR}.MountFailed: alice: sign-in of ")
    assert "failed at step 4" in line and "rolled back" in line
    assert cryptohome_thread.call(core.mounted_hashes) == []


def test_guest_login_then_logout(cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    result = _run("login", "$guest", "--guest")
    assert result.exit_code == 0, result.output
    guest_hash = cryptohome_thread.call(lambda: core.sanitized_username("$guest"))
    assert _one_line(result).startswith(f"$guest signed in: hash {guest_hash}, ")
    assert cryptohome_thread.call(core.is_guest_session_active)
    assert cryptohome_thread.call(core.mounted_hashes) == [guest_hash]
    result = _run("logout", "$guest")
    assert result.exit_code == 0, result.output
    assert _one_line(result).startswith("$guest signed out: session stopped, ")
    assert not cryptohome_thread.call(core.is_guest_session_active)
    assert cryptohome_thread.call(core.mounted_hashes) == []


def test_guest_flag_for_another_user_is_refused(cryptohome_thread: ThreadedCryptohome) -> None:
    result = _run("login", "alice", "--guest")
    assert result.exit_code == 1
    assert _one_line(result).endswith("a guest mount is for the user '$guest', not 'alice'")


def test_logout_of_a_user_who_is_not_signed_in(cryptohome_thread: ThreadedCryptohome) -> None:
    result = _run("logout", "alice")
    assert result.exit_code == 1
    assert _one_line(result).endswith(f"{names.MOUNT_ERROR}.NotMounted: alice is not mounted")


def test_logout_unmounts_a_vault_without_session(cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    cryptohome_thread.call(lambda: core.mount("alice"))  # mounted, StartSession never came
    result = _run("logout", "alice")
    assert result.exit_code == 0, result.output
    assert "no session was started" in _one_line(result)
    assert cryptohome_thread.call(core.mounted_hashes) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root")
def test_login_as_unprivileged_user_is_refused(cryptohome_thread: ThreadedCryptohome) -> None:
    """The same command run by uid 65534 (forked, setgid/setuid) gets AccessDenied."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = _run("login", "mallory")
            os.write(write_fd, json.dumps([result.exit_code, result.output]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exit_code, output = json.loads(data)
    assert exit_code == 1
    assert f"MountEx: {names.ACCESS_DENIED}" in output
    assert len(output.strip().splitlines()) == 1
    core = cryptohome_thread.core
    assert cryptohome_thread.call(core.mounted_hashes) == []
    assert [c for c in cryptohome_thread.call(core.calls) if c.method == "MountEx"] == []
