"""Hostile D-Bus callers against cryptohome_sim on a private dbus-daemon (never the machine's
bus): a non-root client (uid 65534, a separate process) trying every privileged method, and root
calling with malformed or path-like arguments. Each call must be answered with a clear D-Bus
answer (AccessDenied from the bus itself; InvalidArgs, or a CryptohomeErrorCode in the reply,
from the service) and change no mount; a user name that looks like a path is only ever hashed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading

import pytest

from daemonstore import mountinfo, paths
from daemonstore.dbus import names
from daemonstore.dbus.client import CallError, Client
from daemonstore.testing.bus import RunningCryptohome
from tests.hardening.conftest import Figures

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio]

NOBODY = 65534
UDA = (names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH)
SM = (names.SESSION_NAME, names.SESSION_PATH)

CTL = (names.CRYPTOHOME_NAME, names.CONTROL_PATH)
UDA_IF, MISC_IF = names.USERDATAAUTH_IFACE, names.MISC_IFACE

#: (destination+path, interface, member, signature, body) that uid 65534 may not call (the
#: shipped policy: root, and chronos for Chrome's methods; nobody else)
PRIVILEGED = [
    (UDA, UDA_IF, "StartAuthSession", "ay", [b"\x0a\x0b\x12\x09../../etc"]),
    (UDA, UDA_IF, "PrepareGuestVault", "ay", [b""]),
    (UDA, UDA_IF, "Unmount", "ay", [b""]),
    (UDA, UDA_IF, "IsMounted", "ay", [b""]),
    (UDA, UDA_IF, "Remove", "ay", [b"\x0a\x09\x12\x07mallory"]),
    (UDA, MISC_IF, "GetSystemSalt", "ay", [b""]),
    (UDA, MISC_IF, "GetSanitizedUsername", "ay", [b"\x0a\x05alice"]),
    (CTL, names.CONTROL_IFACE, "AddUser", "s", ["mallory"]),
    (CTL, names.CONTROL_IFACE, "InjectFailure", "si", ["Unmount", 0]),
    (CTL, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["evil", 0, 0, 0o4755]),
    (CTL, names.CONTROL_IFACE, "GetMountinfo", "s", [""]),
    (CTL, names.CONTROL_IFACE, "GetCalls", "", []),
    (SM, names.SESSION_IFACE, "StartSession", "ss", ["mallory", ""]),
    (SM, names.SESSION_IFACE, "StopSession", "s", [""]),
    (SM, names.SESSION_IFACE, "RetrievePrimarySession", "", []),
    (("org.freedesktop.DBus", "/org/freedesktop/DBus"), "org.freedesktop.DBus", "RequestName",
     "su", [names.CRYPTOHOME_NAME, 4]),
]

#: (path, interface, member, signature, body, the answer the service must give) -- as root.
#: A D-Bus error name, or ("reply", bytes): a refusal inside cryptohome's protobuf reply.
MALFORMED = [
    (UDA, MISC_IF, "GetSanitizedUsername", "ay", [b"\x0a\x00"], names.INVALID_ARGS),
    (UDA, MISC_IF, "GetSanitizedUsername", "ay", [b"\x0a\x03a\nb"], names.INVALID_ARGS),
    (UDA, MISC_IF, "GetSanitizedUsername", "ay", [b"\x0a\x03a\x7fb"], names.INVALID_ARGS),
    (UDA, MISC_IF, "GetSanitizedUsername", "ay", [b"\x0a\xac\x02" + b"x" * 300],
     names.INVALID_ARGS),
    (UDA, MISC_IF, "GetSanitizedUsername", "ay", [b"\x0a\x7f"], names.INVALID_ARGS),
    (UDA, MISC_IF, "GetSanitizedUsername", "s", ["alice"], names.INVALID_ARGS),
    (UDA, UDA_IF, "StartAuthSession", "ay", [b"\x0a\x02\x12\x00"], names.INVALID_ARGS),
    (UDA, UDA_IF, "StartAuthSession", "ayay", [b"", b""], names.INVALID_ARGS),
    (UDA, UDA_IF, "Unmount", "u", [7], names.INVALID_ARGS),
    (UDA, UDA_IF, "Unmount", "ay", [b"\x00" * (64 * 1024 + 1)], names.INVALID_ARGS),
    (UDA, UDA_IF, "PreparePersistentVault", "ay", [b"\x0a\x03abc"], ("reply", b"\x08\x21")),
    (UDA, UDA_IF, "Remove", "ay", [b"\x0a\x0a\x12\x08nobody@x"], ("reply", b"\x08\x01")),
    (CTL, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["../etc", 0, 0, 0o755],
     names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["..", 0, 0, 0o755], names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["a/b", 0, 0, 0o755], names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["x\ny", 0, 0, 0o755],
     names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["biod", 0, 0, 0o17777],
     names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["ww", 0, 0, 0o777], names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "InjectFailure", "si", ["Reboot", 0], names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "InjectFailure", "si", ["Unmount", -1], names.INVALID_ARGS),
    (CTL, names.CONTROL_IFACE, "GetMountinfo", "s", ["no-such-namespace"], names.INVALID_ARGS),
]

async def _call_all(address: str, calls: list) -> list[str]:
    out = []
    async with await Client.connect(address) as client:
        for (dest, path), iface, member, sig, body in calls:
            try:
                await client.call(dest, path, iface, member, sig, body)
                out.append("allowed")
            except CallError as exc:
                out.append(exc.error_name)
    return out


def _mounts(svc: RunningCryptohome) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.mount_point, e.options) for e in mountinfo.parse(svc.host.mountinfo())]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root")
async def test_non_root_caller_is_refused_everything_privileged(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client,
        figures: Figures) -> None:
    await cryptohome_client.install_daemon("foo", 20100, 20100, 0o700)
    await cryptohome_client.login("alice")
    before = _mounts(cryptohome_service)
    await cryptohome_client.clear_calls()
    proc = await _run_as_nobody(cryptohome_service.address, PRIVILEGED)
    results = json.loads(proc)
    calls = await cryptohome_client.get_calls()
    refused = [r == names.ACCESS_DENIED for r in results]
    unchanged = _mounts(cryptohome_service) == before and calls == []
    figures.add(attacks=len(results), attacks_refused=sum(refused) if unchanged else 0,
                attack_leaks=0 if unchanged else 1)
    assert results == [names.ACCESS_DENIED] * len(PRIVILEGED)
    assert unchanged  # nothing mounted, and no refused call even reached the service


async def _run_as_nobody(address: str, calls: list) -> str:
    """Fork a child that drops to uid/gid 65534 (no groups) and makes ``calls`` on a fresh
    thread's own event loop (the fork happened inside the test's running loop); its answers
    come back as JSON on a pipe. Killed by its pid if it does not finish."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result: dict[str, object] = {}

            def run() -> None:
                try:
                    result["answers"] = asyncio.run(_call_all(address, calls))
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    result["error"] = f"{type(exc).__name__}: {exc}"

            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
            os.write(write_fd, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    loop = asyncio.get_running_loop()
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            data = await asyncio.wait_for(loop.run_in_executor(None, pipe.read), 30)
        await loop.run_in_executor(None, os.waitpid, pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)  # the child this test forked, by pid
            os.waitpid(pid, 0)
    result = json.loads(data)
    assert "error" not in result, result["error"]
    return json.dumps(result["answers"])


async def test_malformed_and_path_like_arguments(cryptohome_service: RunningCryptohome,
                                                 cryptohome_client: Client,
                                                 figures: Figures) -> None:
    await cryptohome_client.install_daemon("foo", 20100, 20100, 0o700)
    before = _mounts(cryptohome_service)
    got = []
    for where, iface, member, sig, body, want in MALFORMED:
        try:
            reply = await cryptohome_client.call(*where, iface, member, sig, body)
        except CallError as exc:
            got.append((member, body[:1], exc.error_name == want and bool(exc.text)))
        else:
            got.append((member, body[:1], want == ("reply", bytes(reply[0]))))
    unchanged = _mounts(cryptohome_service) == before
    # a user name that looks like a path is just bytes to hash: it mounts under its hash
    h = (await cryptohome_client.login("../../etc/passwd")).user_hash
    odd = [mp for mp, _ in _mounts(cryptohome_service) if (mp, ()) not in
           {(b, ()) for b, _ in before} and h not in mp and mp != paths.HOME_CHRONOS_USER]
    await cryptohome_client.logout()
    hashed = paths.check_hash(h) == h and odd == [] and _mounts(cryptohome_service) == before
    ok = sum(1 for g in got if g[2]) + hashed
    figures.add(attacks=len(got) + 1, attacks_refused=ok if unchanged else 0,
                attack_leaks=0 if unchanged else 1)
    assert [g for g in got if not g[2]] == []
    assert unchanged and hashed
