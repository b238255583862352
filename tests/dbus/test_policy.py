"""The shipped bus policy for real (daemonstore/dbus/policy/*.conf on a private dbus-daemon): a
client running as uid 65534 is refused every method of both services and the names themselves
(AccessDenied, by dbus-daemon itself) yet receives SessionStateChanged; a client running as the
policy's chronos may call what ChromeOS lets Chrome call, and nothing else (no test control, no
introspection); a daemon user with a grant file (the daemon role) the session queries only."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import threading
from typing import Any

import pytest

from daemonstore.dbus import names
from daemonstore.dbus.client import CallError, Client, ClientError
from daemonstore.testing.bus import CHRONOS_STAND_IN, DAEMON_STAND_IN, RunningCryptohome

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio]

NOBODY = 65534
CHILD_TIMEOUT = 15.0
UDA, MISC, SM = names.USERDATAAUTH_IFACE, names.MISC_IFACE, names.SESSION_IFACE

#: (label, destination, path, interface, member, signature, body)
CALLS = [
    ("GetSanitizedUsername", MISC, "GetSanitizedUsername", "ay", [b"\x0a\x07mallory"]),
    ("GetSystemSalt", MISC, "GetSystemSalt", "ay", [b""]),
    ("StartAuthSession", UDA, "StartAuthSession", "ay", [b"\x0a\x09\x12\x07mallory"]),
    ("PrepareGuestVault", UDA, "PrepareGuestVault", "ay", [b""]),
    ("IsMounted", UDA, "IsMounted", "ay", [b""]),
    ("Unmount", UDA, "Unmount", "ay", [b""]),
    ("Introspect", "org.freedesktop.DBus.Introspectable", "Introspect", "", []),
    ("RetrieveSessionState", SM, "RetrieveSessionState", "", []),
    ("RetrievePrimarySession", SM, "RetrievePrimarySession", "", []),
    ("RetrieveActiveSessions", SM, "RetrieveActiveSessions", "", []),
    ("IsGuestSessionActive", SM, "IsGuestSessionActive", "", []),
    ("StopSession", SM, "StopSession", "s", [""]),
    ("AddUser", names.CONTROL_IFACE, "AddUser", "s", ["mallory"]),
    ("GetCalls", names.CONTROL_IFACE, "GetCalls", "", []),
]
#: what ChromeOS's policy lets chronos (Chrome) call, among CALLS
CHRONOS_MAY = {"GetSanitizedUsername", "GetSystemSalt", "StartAuthSession", "PrepareGuestVault",
               "IsMounted", "Unmount", "RetrieveSessionState", "RetrievePrimarySession",
               "RetrieveActiveSessions", "IsGuestSessionActive", "StopSession"}
#: what a daemon user may call among CALLS (ChromeOS's SessionManager.conf daemon blocks)
DAEMON_MAY = {"RetrieveSessionState", "RetrievePrimarySession", "RetrieveActiveSessions",
              "IsGuestSessionActive"}


def _where(interface: str) -> tuple[str, str]:
    if interface == SM:
        return names.SESSION_NAME, names.SESSION_PATH
    if interface == names.CONTROL_IFACE:
        return names.CRYPTOHOME_NAME, names.CONTROL_PATH
    return names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH


async def _outcome(client: Client, interface: str, member: str, sig: str,
                   body: list[Any]) -> str:
    destination, path = _where(interface)
    try:
        await client.call(destination, path, interface, member, sig, body)
    except CallError as exc:
        return exc.error_name
    except ClientError as exc:
        return f"client error: {exc}"
    return "allowed"


async def _probe(address: str, ready_fd: int) -> dict[str, Any]:
    """What the unprivileged child does (runs in its own thread and loop)."""
    out: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
    async with await Client.connect(address) as client:
        async with client.session_states() as states:
            os.write(ready_fd, b'{"ready": true}\n')
            out["signal"] = await asyncio.wait_for(states.get(), CHILD_TIMEOUT)
        for label, iface, member, sig, body in CALLS:
            out[label] = await _outcome(client, iface, member, sig, body)
        for name in (names.CRYPTOHOME_NAME, names.SESSION_NAME):
            out[f"own {name}"] = await _outcome_own(client, name)
    return out


async def _outcome_own(client: Client, name: str) -> str:
    try:
        await client.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus", "RequestName", "su", [name, 4])
    except CallError as exc:
        return exc.error_name
    return "allowed"


def _child(address: str, write_fd: int, uid: int) -> None:
    """Forked child: drop to ``uid``, then run the probe in a fresh thread (the fork happened
    inside the parent's running loop; a new thread has none, so asyncio.run works there)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result.update(asyncio.run(_probe(address, write_fd)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    os.write(write_fd, json.dumps(result).encode() + b"\n")


async def _run_as(uid: int, svc: RunningCryptohome, client: Client) -> dict[str, Any]:
    """Fork a child as ``uid``; once it listens, sign alice in as root (``started``)."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            _child(svc.address, write_fd, uid)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    reader = os.fdopen(read_fd, "rb")
    try:
        line = await asyncio.wait_for(loop.run_in_executor(None, reader.readline),
                                      CHILD_TIMEOUT)
        assert json.loads(line) == {"ready": True}, line
        await client.login("alice")  # as root: allowed, emits "started"
        line = await asyncio.wait_for(loop.run_in_executor(None, reader.readline),
                                      CHILD_TIMEOUT)
        _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)  # only the child this test forked
            os.waitpid(pid, 0)
        reader.close()
    out = json.loads(line)
    assert "error" not in out, out["error"]
    assert os.waitstatus_to_exitcode(status) == 0
    assert (out["uid"], out["gid"], out["groups"]) == (uid, uid, [])
    return out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")


@needs_root
async def test_nobody_is_refused_everything_but_hears_the_signal(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    assert cryptohome_service.bus.privileged_user == "root"
    await cryptohome_client.clear_calls()
    out = await _run_as(NOBODY, cryptohome_service, cryptohome_client)
    assert out["signal"] == names.STARTED  # signals reach everyone: that is how daemons learn
    for label, *_ in CALLS:
        assert out[label] == names.ACCESS_DENIED, label
    for name in (names.CRYPTOHOME_NAME, names.SESSION_NAME):
        assert out[f"own {name}"] == names.ACCESS_DENIED, name
    calls = [m for m, a in await cryptohome_client.get_calls() if "mallory" in a]
    assert calls == []  # no refused call reached the service
    assert await cryptohome_client.session_state() == names.STARTED  # StopSession never ran


@needs_root
async def test_chronos_may_call_what_chromeos_lets_chrome_call(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    assert cryptohome_service.bus.chronos == CHRONOS_STAND_IN
    out = await _run_as(pwd.getpwnam(CHRONOS_STAND_IN).pw_uid, cryptohome_service,
                        cryptohome_client)
    assert out["signal"] == names.STARTED
    for label, *_ in CALLS:
        want = "allowed" if label in CHRONOS_MAY else names.ACCESS_DENIED
        assert out[label] == want, label
    for name in (names.CRYPTOHOME_NAME, names.SESSION_NAME):
        assert out[f"own {name}"] == names.ACCESS_DENIED, name
    # chronos's StopSession (allowed) ended alice's session; its Unmount unmounted her
    assert await cryptohome_client.session_state() == names.STOPPED
    assert await cryptohome_client.is_mounted() == (False, False)


@needs_root
async def test_a_daemon_user_may_ask_who_is_signed_in_only(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    """The daemon stand-in, granted by its grant file: the signal and the session queries,
    nothing else; nothing it was refused ran."""
    assert cryptohome_service.bus.daemon_users == (DAEMON_STAND_IN,)
    out = await _run_as(pwd.getpwnam(DAEMON_STAND_IN).pw_uid, cryptohome_service,
                        cryptohome_client)
    assert out["signal"] == names.STARTED
    for label, *_ in CALLS:
        assert out[label] == ("allowed" if label in DAEMON_MAY else names.ACCESS_DENIED), label
    for name in (names.CRYPTOHOME_NAME, names.SESSION_NAME):
        assert out[f"own {name}"] == names.ACCESS_DENIED, name
    assert await cryptohome_client.session_state() == names.STARTED  # StopSession refused
    assert await cryptohome_client.is_mounted() == (True, False)  # Unmount refused
