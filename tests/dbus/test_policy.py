"""The bus policy for real: a client running as uid 65534 may hash names, query the session
manager and receive SessionStateChanged, and is refused (AccessDenied, by dbus-daemon itself)
the mount methods, session start/stop, the control interface and the names themselves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from typing import Any

import pytest

from daemonstore.dbus import names
from daemonstore.dbus.client import CallError, Client
from daemonstore.testing.bus import RunningCryptohome

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio]

NOBODY = 65534
CHILD_TIMEOUT = 15.0

#: (label, interface, member, signature, body) a non-root caller must be refused
REFUSED = [
    ("MountEx", names.MOUNT_IFACE, "MountEx", "sb", ["mallory", False]),
    ("Unmount", names.MOUNT_IFACE, "Unmount", "s", ["alice"]),
    ("ListMounted", names.MOUNT_IFACE, "ListMounted", "", []),
    ("GetSystemSalt", names.MISC_IFACE, "GetSystemSalt", "", []),
    ("AddUser", names.CONTROL_IFACE, "AddUser", "s", ["mallory"]),
    ("InjectFailure", names.CONTROL_IFACE, "InjectFailure", "si", ["MountEx", 0]),
    ("GetCalls", names.CONTROL_IFACE, "GetCalls", "", []),
]
REFUSED_SESSION = [
    ("StartSession", "s", ["mallory"]),
    ("StopSession", "s", [""]),
]


async def _outcome(call: Any) -> str:
    try:
        await call
    except CallError as exc:
        return exc.error_name
    return "allowed"


async def _probe(address: str, ready_fd: int) -> dict[str, Any]:
    """What the unprivileged child does (runs in its own thread and loop)."""
    out: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
    async with await Client.connect(address) as client:
        out["hash"] = await client.sanitized_username("Alice")
        out["state"] = await client.session_state()
        out["primary"] = list(await client.primary_session())
        out["sessions"] = await client.active_sessions()
        for label, iface, member, sig, body in REFUSED:
            out[label] = await _outcome(client.call(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH,
                                                    iface, member, sig, body))
        for member, sig, body in REFUSED_SESSION:
            out[member] = await _outcome(client.call(names.SESSION_NAME, names.SESSION_PATH,
                                                     names.SESSION_IFACE, member, sig, body))
        for name in (names.CRYPTOHOME_NAME, names.SESSION_NAME):
            out[f"own {name}"] = await _outcome(client.call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                "RequestName", "su", [name, 4]))
        async with client.session_states() as states:
            os.write(ready_fd, b'{"ready": true}\n')
            out["signal"] = await asyncio.wait_for(states.get(), CHILD_TIMEOUT)
    return out


def _child(address: str, write_fd: int) -> None:
    """Forked child: drop to nobody, then run the probe in a fresh thread.

    The fork happened inside the parent's running event loop; a new thread has no running loop
    of its own, so asyncio.run works there without touching the inherited one.
    """
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
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


def _fork_nobody(address: str) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            _child(address, write_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root")
async def test_unprivileged_client_is_refused_mounts_but_may_hash(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    assert cryptohome_service.bus.privileged_user == "root"
    host = cryptohome_service.host
    loop = asyncio.get_running_loop()
    pid, read_fd = _fork_nobody(cryptohome_service.address)
    reader = os.fdopen(read_fd, "rb")
    try:
        line = await asyncio.wait_for(loop.run_in_executor(None, reader.readline),
                                      CHILD_TIMEOUT)
        assert json.loads(line) == {"ready": True}, line
        before = host.mountinfo()
        await cryptohome_client.clear_calls()
        await cryptohome_client.login("alice")  # as root: allowed, emits "started"
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
    assert (out["uid"], out["gid"], out["groups"]) == (NOBODY, NOBODY, [])
    # anyone may: GetSanitizedUsername, Retrieve*, receive the signal
    assert out["hash"] == await cryptohome_client.sanitized_username("alice")
    assert out["state"] == names.STOPPED
    assert out["primary"] == ["", ""]
    assert out["sessions"] == {}
    assert out["signal"] == names.STARTED
    # only root may: everything else, refused by the bus before the service sees it
    for label, *_ in REFUSED:
        assert out[label] == names.ACCESS_DENIED, label
    for member, *_ in REFUSED_SESSION:
        assert out[member] == names.ACCESS_DENIED, member
    for name in (names.CRYPTOHOME_NAME, names.SESSION_NAME):
        assert out[f"own {name}"] == names.ACCESS_DENIED, name
    calls = [m for m, a in await cryptohome_client.get_calls() if "mallory" in a]
    assert calls == []  # no refused call reached the service
    assert "mallory" not in str(cryptohome_service.core.known_users())
    assert before != host.mountinfo()  # alice (root's login) did mount
