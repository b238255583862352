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
    assert _one_line(result) == (f"alice signed in: hash {user_hash}, account created; "
                                 "session started")
    assert cryptohome_thread.call(core.mounted_hashes) == [user_hash]
    assert cryptohome_thread.call(core.session_state) == names.STARTED
    assert cryptohome_thread.call(core.primary_session) == ("alice", user_hash)

    result = _run("logout")
    assert result.exit_code == 0, result.output
    assert _one_line(result) == "signed out: session stopped, every cryptohome unmounted"
    assert cryptohome_thread.call(core.session_state) == names.STOPPED
    assert cryptohome_thread.call(core.host.mountinfo) == before
    calls = [c.method for c in cryptohome_thread.call(core.calls)
             if c.method != "GetSanitizedUsername"]
    assert calls == ["StartAuthSession", "CreatePersistentUser", "PreparePersistentVault",
                     "InvalidateAuthSession", "RetrieveActiveSessions", "StartSession",
                     names.SESSION_SIGNAL, "StopSession", names.SESSION_SIGNAL,
                     names.SESSION_SIGNAL, "Unmount"]
    result = _run("login", "ALICE")  # the same account: authenticated, not created
    assert _one_line(result) == f"ALICE signed in: hash {user_hash}; session started"


def test_logout_ends_every_session(cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    for user in ("alice", "bob"):
        assert _run("login", user).exit_code == 0
    assert len(cryptohome_thread.call(core.active_sessions)) == 2
    result = _run("logout")
    assert result.exit_code == 0, result.output
    assert cryptohome_thread.call(core.active_sessions) == {}
    assert cryptohome_thread.call(core.mounted_hashes) == []


def test_logout_takes_no_user(cryptohome_thread: ThreadedCryptohome) -> None:
    result = _run("logout", "alice")
    assert result.exit_code == 2  # ChromeOS has no per-user sign-out
    assert "unexpected extra argument" in result.output.lower()


def test_explicit_address_wins(cryptohome_thread: ThreadedCryptohome,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS")
    result = _run("login", "bob", "--address", cryptohome_thread.address)
    assert result.exit_code == 0, result.output


def test_without_address_the_system_socket_under_root_is_used(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    result = _run("login", "alice", "--root", str(tmp_path))
    assert result.exit_code == 1
    assert (f"cannot connect to the bus at unix:path={tmp_path}/run/dbus/system_bus_socket"
            in _one_line(result))


def test_unreachable_bus(tmp_path: object) -> None:
    result = _run("logout", "--address", f"unix:path={tmp_path}/no-socket")
    assert result.exit_code == 1
    assert "logout failed: cannot connect to the bus" in _one_line(result)


def test_bus_without_the_service(private_bus: PrivateBus) -> None:
    result = _run("login", "alice")
    assert result.exit_code == 1
    assert names.SERVICE_UNKNOWN in _one_line(result)


@pytest.mark.parametrize(("args", "reason"), [
    (["", "--address", "unix:path=/nonexistent"], "user name"),
    (["bad\x01name", "--address", "unix:path=/nonexistent"], "user name"),
    (["--address", "unix:path=/nonexistent"], "give USER (or --guest)"),
    (["alice", "--guest", "--address", "unix:path=/nonexistent"],
     "a guest signs in as $guest, not 'alice'"),
    (["--guest", "--ephemeral", "--address", "unix:path=/nonexistent"], "exclude each other"),
])
def test_bad_input_is_exit_2(args: list[str], reason: str) -> None:
    result = _run("login", *args)
    assert result.exit_code == 2
    assert reason in _one_line(result)


def test_sign_in_failure_reports_the_error_code(cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    cryptohome_thread.call(lambda: core.inject_failure("PreparePersistentVault", 4))
    result = _run("login", "alice")
    assert result.exit_code == 1
    assert _one_line(result) == ("Error: login alice failed: PreparePersistentVault: "
                                 "cryptohome refused: CRYPTOHOME_ERROR_MOUNT_FATAL")
    assert cryptohome_thread.call(core.mounted_hashes) == []


def test_guest_login_then_logout(cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    result = _run("login", "--guest")
    assert result.exit_code == 0, result.output
    guest_hash = cryptohome_thread.call(lambda: core.sanitized_username("$guest"))
    assert _one_line(result) == f"$guest signed in: hash {guest_hash}; session started"
    assert cryptohome_thread.call(core.is_guest_session_active)
    assert cryptohome_thread.call(core.mounted_hashes) == [guest_hash]
    result = _run("login", "alice")  # nobody joins a guest session
    assert result.exit_code == 1
    assert "CRYPTOHOME_ERROR_MOUNT_FATAL" in _one_line(result)
    result = _run("logout")
    assert result.exit_code == 0, result.output
    assert not cryptohome_thread.call(core.is_guest_session_active)
    assert cryptohome_thread.call(core.mounted_hashes) == []


def test_guest_is_refused_while_a_user_is_signed_in(
        cryptohome_thread: ThreadedCryptohome) -> None:
    assert _run("login", "alice").exit_code == 0
    result = _run("login", "--guest")
    assert result.exit_code == 1
    assert _one_line(result) == ("Error: login $guest failed: PrepareGuestVault: "
                                 "cryptohome refused: CRYPTOHOME_ERROR_MOUNT_FATAL")


def test_logout_unmounts_a_vault_without_session(cryptohome_thread: ThreadedCryptohome) -> None:
    core = cryptohome_thread.core
    cryptohome_thread.call(lambda: core.prepare_guest_vault())  # StartSession never came
    result = _run("logout")
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
    assert f"StartAuthSession: {names.ACCESS_DENIED}" in output
    assert len(output.strip().splitlines()) == 1
    core = cryptohome_thread.core
    assert cryptohome_thread.call(core.mounted_hashes) == []
    assert cryptohome_thread.call(core.calls) == []  # the bus refused it before the service
