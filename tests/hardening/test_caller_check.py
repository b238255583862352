"""cryptohome-sim checks its callers itself (issue 18, finding 7; SECURITY.md, "Caller check"):
on a private dbus-daemon whose policy lets *everyone* call everything, a process running as uid
65534 is still refused every method of both services -- by the service, with the bus's own
``AccessDenied`` -- and nothing runs; the chronos stand-in still gets exactly Chrome's methods;
a daemon user (granted by a grant file) exactly the session queries, refused the rest by the bus
on the shipped policy and by the service on the open bus; root everything; the uid cache forgets
a caller once its unique name leaves the bus.

Who answered is read from the error's sender: ``org.freedesktop.DBus`` when the bus policy
refused, the service's unique name when the service did. Each uid runs in a forked child that
drops to it (as tests/dbus/test_policy.py), on its own connection; the parent kills only that
pid if it hangs.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from cryptohome_sim.bus import start_private_bus
from daemonstore import mountinfo
from daemonstore.dbus import names
from daemonstore.dbus.callers import CALLERS, DAEMON
from daemonstore.dbus.client import Client
from daemonstore.testing.bus import (
    CHRONOS_STAND_IN,
    DAEMON_STAND_IN,
    RunningCryptohome,
    privileged_user,
    require_dbus_daemon,
)
from tests.dbus.test_policy import CALLS, CHRONOS_MAY
from tests.hardening.conftest import Figures

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")]

NOBODY = 65534
CHILD_TIMEOUT = 20.0
BUS = "org.freedesktop.DBus"

#: a policy file that opens the bus: every method call to anyone is allowed (the mandatory
#: context is applied after every default and user context, so it overrides the shipped denials)
ALLOW_ALL = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="mandatory">
    <allow send_type="method_call"/>
  </policy>
</busconfig>
"""

#: what the children call: (label, destination, path, interface, member, signature, body)
PROBES: list[tuple[str, str, str, str, str, str, list[Any]]] = []
for _label, _iface, _member, _sig, _body in CALLS:
    if _iface == names.SESSION_IFACE:
        _dest, _path = names.SESSION_NAME, names.SESSION_PATH
    elif _iface == names.CONTROL_IFACE:
        _dest, _path = names.CRYPTOHOME_NAME, names.CONTROL_PATH
    else:
        _dest, _path = names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH
    PROBES.append((_label, _dest, _path, _iface, _member, _sig, _body))
PROBES += [
    ("InstallDaemon", names.CRYPTOHOME_NAME, names.CONTROL_PATH, names.CONTROL_IFACE,
     "InstallDaemon", "suuu", ["evil", 0, 0, 0o4755]),
    ("Remove", names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH, names.USERDATAAUTH_IFACE,
     "Remove", "ay", [b"\x0a\x07\x12\x05alice"]),
    ("Ping", names.SESSION_NAME, names.SESSION_PATH, "org.freedesktop.DBus.Peer", "Ping",
     "", []),
    # no interface: dbus-daemon's allow rules with send_interface do not match it
    ("GetSystemSalt (no interface)", names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH, "",
     "GetSystemSalt", "ay", [b""]),
]


@pytest_asyncio.fixture
async def open_bus_service() -> AsyncIterator[RunningCryptohome]:
    """cryptohome-sim on a private bus whose policy allows every call (the shipped files plus
    ALLOW_ALL), with the same root, chronos and daemon stand-ins as the usual fixtures."""
    from daemonstore.model import ModelHost

    require_dbus_daemon()
    with start_private_bus(privileged_user=privileged_user(), chronos=CHRONOS_STAND_IN,
                           daemon_users=(DAEMON_STAND_IN,), extra_policy=ALLOW_ALL) as bus:
        running = await RunningCryptohome.start(bus, ModelHost())
        try:
            yield running
        finally:
            await running.close()


async def _probe(address: str, probes: list[tuple[Any, ...]], out_fd: int,
                 go_fd: int) -> None:
    """The child's calls, on a raw connection (the error's sender is what tells the layers
    apart); reports, then stays connected until the parent says go."""
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    try:
        answers = {}
        for label, dest, path, iface, member, sig, body in probes:
            reply = await bus.call(Message(destination=dest, path=path,
                                           interface=iface or None, member=member,
                                           signature=sig, body=body))
            assert reply is not None
            if reply.message_type is MessageType.ERROR:
                answers[label] = [reply.error_name, reply.sender, str(reply.body[0])]
            else:
                answers[label] = ["allowed", reply.sender, ""]
        os.write(out_fd, json.dumps({"name": bus.unique_name, "uid": os.getuid(),
                                     "answers": answers}).encode() + b"\n")
        await asyncio.get_running_loop().run_in_executor(None, os.read, go_fd, 1)
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()


class Child:
    """A forked child running as ``uid``; :meth:`report` its answers, :meth:`finish` lets it
    disconnect and reaps it."""

    def __init__(self, uid: int, address: str, probes: list[tuple[Any, ...]]) -> None:
        out_r, out_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(out_r)
                os.close(go_w)
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                error: list[str] = []

                def run() -> None:
                    try:
                        asyncio.run(_probe(address, probes, out_w, go_r))
                    except BaseException as exc:  # noqa: BLE001 - reported to the parent
                        error.append(f"{type(exc).__name__}: {exc}")

                thread = threading.Thread(target=run)  # a fresh thread has no running loop
                thread.start()
                thread.join()
                if error:
                    os.write(out_w, json.dumps({"error": error[0]}).encode() + b"\n")
                code = 0
            finally:
                os._exit(code)
        os.close(out_w)
        os.close(go_r)
        self.pid = pid
        self._out = os.fdopen(out_r, "rb")
        self._go = go_w

    async def report(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, self._out.readline),
                                          CHILD_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        out = json.loads(line)
        if "error" in out:
            self.kill()
            raise AssertionError(out["error"])
        return out

    async def finish(self) -> None:
        loop = asyncio.get_running_loop()
        os.write(self._go, b"g")
        try:
            _, status = await asyncio.wait_for(
                loop.run_in_executor(None, os.waitpid, self.pid, 0), CHILD_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        self.pid = 0
        self._close()
        assert os.waitstatus_to_exitcode(status) == 0

    def kill(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)  # only the child this test forked
            os.waitpid(self.pid, 0)
            self.pid = 0
        self._close()

    def _close(self) -> None:
        if self._go >= 0:
            os.close(self._go)
            self._go = -1
        self._out.close()


async def ask_as(uid: int, address: str, probes: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Run ``probes`` from a forked child as ``uid`` and wait for it: its report (the child is
    killed if anything goes wrong, so no test leaves it behind)."""
    child = Child(uid, address, probes)
    try:
        out = await child.report()
    except BaseException:
        child.kill()
        raise
    await child.finish()
    return out


def _mounts(svc: RunningCryptohome) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.mount_point, e.options) for e in mountinfo.parse(svc.host.mountinfo())]


def _service_names(svc: RunningCryptohome) -> dict[str, str]:
    """bus name -> the unique name of the service's connection owning it."""
    return {name: check.bus.unique_name for name, check in svc.service.callers.items()}


async def _until(predicate: Any, timeout: float = CHILD_TIMEOUT) -> bool:
    """Wait (bounded) for something the bus tells the service asynchronously."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_nobody_is_refused_by_the_service_itself_on_an_open_bus(
        open_bus_service: RunningCryptohome, figures: Figures) -> None:
    svc = open_bus_service
    root = await svc.client()
    await root.install_daemon("foo", 20100, 20100, 0o700)
    await root.login("alice")
    before = _mounts(svc)
    await root.clear_calls()
    child = Child(NOBODY, svc.address, PROBES)
    try:
        out = await child.report()
        checks = svc.service.callers
        # while it is connected, its uid is cached by each connection it called
        cached = {name: check.cached().get(out["name"]) for name, check in checks.items()}
    except BaseException:
        child.kill()
        raise
    await child.finish()
    owners = _service_names(svc)
    answers = out["answers"]
    by_service = {label: a for label, a in answers.items()
                  if a[0] == names.ACCESS_DENIED and a[1] in owners.values()}
    calls = await root.get_calls()
    unchanged = _mounts(svc) == before and calls == []
    figures.add(attacks=len(PROBES),
                attacks_refused=len(by_service) if unchanged else 0,
                attack_leaks=0 if unchanged else 1)
    assert out["uid"] == NOBODY
    # the bus let every call through (the error comes from the service, not the bus) and the
    # service refused each with the bus's own answer
    assert {label: (a[0], a[1]) for label, a in answers.items()} == {
        label: (names.ACCESS_DENIED, owners[dest]) for label, dest, *_ in PROBES}
    assert all(a[2].startswith("Rejected send message") and 'uid=65534' in a[2]
               for a in answers.values())
    assert unchanged  # nothing ran: no mount changed, nothing logged
    assert await root.session_state() == names.STARTED  # StopSession never ran
    assert cached == {names.CRYPTOHOME_NAME: NOBODY, names.SESSION_NAME: NOBODY}
    # once its unique name leaves the bus, no connection keeps it
    assert await _until(lambda: all(out["name"] not in c.cached() for c in checks.values()))
    await root.logout()


async def test_chronos_gets_chromes_methods_only_on_an_open_bus(
        open_bus_service: RunningCryptohome) -> None:
    svc = open_bus_service
    root = await svc.client()
    await root.login("alice")
    chronos = pwd.getpwnam(CHRONOS_STAND_IN).pw_uid
    out = await ask_as(chronos, svc.address, PROBES)
    owners = _service_names(svc)
    got = {label: a[0] if a[0] in ("allowed", names.ACCESS_DENIED) else "answered"
           for label, a in out["answers"].items()}
    chrome_may = CHRONOS_MAY | {"Remove"}  # the policy's chronos block (Remove included)
    assert got == {label: "allowed" if label in chrome_may else names.ACCESS_DENIED
                   for label, *_ in PROBES}
    assert all(a[1] in owners.values() for a in out["answers"].values())
    # chronos's StopSession and Unmount ran: alice is signed out
    assert await root.session_state() == names.STOPPED
    assert await root.is_mounted() == (False, False)


async def test_root_calls_everything_and_held_calls_keep_their_order(
        open_bus_service: RunningCryptohome) -> None:
    """Root's first calls on a new connection are held while its uid is asked for, then run
    in the order sent (three pipelined calls; the call log shows the order)."""
    svc = open_bus_service
    raw = await MessageBus(bus_address=svc.address, bus_type=BusType.SYSTEM).connect()
    try:
        replies = await asyncio.gather(*(raw.call(Message(
            destination=names.CRYPTOHOME_NAME, path=names.CONTROL_PATH,
            interface=names.CONTROL_IFACE, member="InjectFailure", signature="si",
            body=["PreparePersistentVault", step])) for step in (3, 1, 2)))
        assert [r.message_type for r in replies] == [MessageType.METHOD_RETURN] * 3
        assert svc.service.callers[names.CRYPTOHOME_NAME].cached()[raw.unique_name] == \
            os.geteuid()
    finally:
        raw.disconnect()
        await raw.wait_for_disconnect()
    async with await Client.connect(svc.address) as client:
        calls = await client.get_calls()
        assert [a for m, a in calls if m == "InjectFailure"] == [
            ["PreparePersistentVault", "3"], ["PreparePersistentVault", "1"],
            ["PreparePersistentVault", "2"]]
        await client.call(names.CRYPTOHOME_NAME, names.CONTROL_PATH, names.CONTROL_IFACE,
                          "ClearFailures", "", [])
        assert (await client.login("bob")).user_hash
        await client.logout()


async def test_a_refusal_looks_the_same_from_either_layer(
        open_bus_service: RunningCryptohome, cryptohome_service: RunningCryptohome) -> None:
    """The same call from uid 65534: refused by the bus (shipped policy) and by the service
    (open bus): the same error name and the same text, but for who sent it."""
    probe = [p for p in PROBES if p[0] == "GetSystemSalt"]
    answers = []
    for svc in (cryptohome_service, open_bus_service):
        answers.append((await ask_as(NOBODY, svc.address, probe))["answers"]["GetSystemSalt"])
    (bus_name, bus_sender, bus_text), (svc_name, svc_sender, svc_text) = answers
    assert bus_sender == BUS
    assert svc_sender == _service_names(open_bus_service)[names.CRYPTOHOME_NAME]
    assert bus_name == svc_name == names.ACCESS_DENIED
    for text in (bus_text, svc_text):
        assert text.startswith("Rejected send message, ")
        assert (f'interface="{names.MISC_IFACE}" member="GetSystemSalt" error name="(unset)" '
                f'requested_reply="0" destination="{names.CRYPTOHOME_NAME}"') in text


#: the probes a daemon user may call: the daemon role of the table
DAEMON_MAY = {label for label, dest, _path, iface, member, *_ in PROBES
              if (iface, member) in CALLERS[dest].get(DAEMON, frozenset())}


@pytest.mark.parametrize("bus", ["shipped policy", "open bus"])
async def test_a_daemon_user_may_ask_who_is_signed_in_and_nothing_else(
        bus: str, cryptohome_service: RunningCryptohome,
        open_bus_service: RunningCryptohome) -> None:
    """The daemon stand-in (a grant file in the bus's directory, read by both layers) gets the
    session queries, answered by the service -- and every other probe refused: by dbus-daemon
    on the shipped policy, by the service itself on a bus that allows everything. Nothing of
    a refused call runs (alice stays signed in and mounted)."""
    assert {"RetrieveSessionState", "RetrievePrimarySession", "RetrieveActiveSessions",
            "IsGuestSessionActive"} == DAEMON_MAY
    svc = cryptohome_service if bus == "shipped policy" else open_bus_service
    root = await svc.client()
    await root.login("alice")
    before = _mounts(svc)
    await root.clear_calls()
    uid = pwd.getpwnam(DAEMON_STAND_IN).pw_uid
    assert svc.service.caller_ids.daemons == {uid}
    out = await ask_as(uid, svc.address, PROBES)
    owners = _service_names(svc)
    refuser = BUS if bus == "shipped policy" else None
    for label, dest, *_ in PROBES:
        error, sender, text = out["answers"][label]
        if label in DAEMON_MAY:
            assert (error, sender) == ("allowed", owners[dest]), label
        else:
            assert (error, sender) == (names.ACCESS_DENIED, refuser or owners[dest]), label
            assert text.startswith("Rejected send message"), label
    primary = out["answers"]["RetrievePrimarySession"]
    assert primary[0] == "allowed"
    assert _mounts(svc) == before  # PreparePersistentVault, Unmount, ... never ran
    assert await root.session_state() == names.STARTED  # nor StopSession
    # what reached the service is the queries only (the call log has no refused method)
    assert {m for m, _ in await root.get_calls()} == DAEMON_MAY
    await root.logout()
