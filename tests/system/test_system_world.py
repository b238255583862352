"""The system world (issue 16 part 1): real, unmodified processes at the real paths.

A shell-script daemon -- no daemonstore code in it, only ``/run/daemon-store/sample/*/`` --
spawned with ``world.spawn`` (``daemonstore jail`` and the documented recipe) inside a container
booted like a device (install, startup, ``dbus-daemon --system``, ``cryptohome-sim
--no-daemon-stores``, ``daemonstore hook``); users sign in and out with ``daemonstore
login/logout`` over D-Bus. One container serves most tests (module scope: each test stops what
it spawned and signs everyone out); the plugin's function-scoped fixture and the teardown check
get their own.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from daemonstore.kernel.container import ContainerError, ContainerSpec, start_container
from daemonstore.testing.system import (
    SpawnedProcess,
    SystemWorld,
    SystemWorldError,
    require_system_world,
    system_world,
)

pytestmark = [pytest.mark.kernel, pytest.mark.dbus]

SAMPLE = ("sample", 20200, 20200, 0o700)
ALICE, BOB = "alice@example.com", "bob@example.com"

#: the daemon under test: for every per-user directory it can see, write a note once (what a
#: daemon keeping per-user state does), and say so on stdout
NOTE_TAKER = """
while :; do
    for d in /run/daemon-store/sample/*/; do
        if [ -d "$d" ] && [ ! -e "$d/note" ] && echo "note by $(id -u)" > "$d/note" 2>/dev/null
        then echo "wrote ${d}note"; fi
    done
    sleep 0.01
done
"""


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    """The daemon works on its own time: wait (bounded) for what it should have done."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return value


def vault_note(world: SystemWorld, user: str) -> bytes | None:
    try:
        return world.read_vault(user, "sample", "note")
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest) -> Iterator[SystemWorld]:
    require_system_world()  # before the container: a module fixture precedes the autouse guards
    with system_world(request.config, [SAMPLE]) as w:
        yield w


@pytest.fixture
def sample(world: SystemWorld) -> Iterator[Callable[..., SpawnedProcess]]:
    """Spawn sample's processes; afterwards stop them and sign everyone out."""
    started: list[SpawnedProcess] = []

    def spawn(script: str = NOTE_TAKER, **kwargs: Any) -> SpawnedProcess:
        process = world.spawn("sample", ["/bin/sh", "-c", script], **kwargs)
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.stop()
    if world.signed_in():
        world.logout()


def test_a_shell_daemon_writes_into_the_vault_while_the_user_is_signed_in(
        world: SystemWorld, sample: Callable[..., SpawnedProcess]) -> None:
    daemon = sample()  # started at boot, before anyone signs in
    assert daemon.poll() is None and not daemon.sees_store(ALICE)
    alice = world.login(ALICE)
    assert world.signed_in() == [alice]
    # the sign-in bind propagated into the daemon's namespace, at the real path
    assert f" /run/daemon-store/sample/{alice} " in daemon.mountinfo()
    assert daemon.sees_store(ALICE)
    assert wait_for(lambda: vault_note(world, ALICE), "the note in alice's vault") == \
        b"note by 20200\n"  # written as the template's owner (-u/-g)
    assert daemon.read(f"/run/daemon-store/sample/{alice}/note") == b"note by 20200\n"
    assert f"wrote /run/daemon-store/sample/{alice}/note" in daemon.output()

    # sign-out: the daemon's namespace no longer reaches the vault
    world.logout()
    assert world.signed_in() == []
    assert daemon.poll() is None  # the daemon runs on
    assert not daemon.sees_store(ALICE)
    assert f"/run/daemon-store/sample/{alice} " not in daemon.mountinfo()
    with pytest.raises(FileNotFoundError):
        daemon.read(f"/run/daemon-store/sample/{alice}/note")
    assert world.read_vault(ALICE, "sample", "note") == b"note by 20200\n"  # at rest


def test_a_daemon_started_after_sign_in_sees_the_signed_in_user(
        world: SystemWorld, sample: Callable[..., SpawnedProcess]) -> None:
    bob = world.login(BOB)
    daemon = sample()  # late start: the user is already there when its jail is built
    assert daemon.sees_store(BOB)
    wait_for(lambda: vault_note(world, BOB), "the note in bob's vault")
    assert f"wrote /run/daemon-store/sample/{bob}/note" in daemon.output()


def test_two_users_in_turn_each_get_their_own_store(
        world: SystemWorld, sample: Callable[..., SpawnedProcess]) -> None:
    daemon = sample("""
        while :; do
            for d in /run/daemon-store/sample/*/; do
                [ -d "$d" ] || continue
                [ -e "$d/visits" ] && [ "$(cat "$d/seen" 2>/dev/null)" = yes ] && continue
                echo yes > "$d/seen" 2>/dev/null && echo visit >> "$d/visits" && echo "+ $d"
            done
            sleep 0.01
        done""")
    alice = world.login(ALICE)
    # the daemon may not have written yet: a missing file means "not yet", not a failure
    assert wait_for(lambda: _maybe(world, ALICE, "visits") if daemon.sees_store(ALICE)
                    else None, "alice's visit") == b"visit\n"
    world.logout()
    bob = world.login(BOB)
    assert daemon.sees_store(BOB) and not daemon.sees_store(ALICE)
    assert wait_for(lambda: _maybe(world, BOB, "visits"), "bob's visit") == b"visit\n"
    assert world.signed_in() == [bob]
    # each vault holds only its own user's data; the daemon saw one store at a time
    assert world.read_vault(ALICE, "sample", "visits") == b"visit\n"
    out = daemon.output()
    assert f"+ /run/daemon-store/sample/{alice}/" in out
    assert f"+ /run/daemon-store/sample/{bob}/" in out
    assert alice != bob


def _maybe(world: SystemWorld, user: str, rel: str) -> bytes | None:
    try:
        return world.read_vault(user, "sample", rel)
    except FileNotFoundError:
        return None


def test_the_system_bus_is_at_its_real_path_for_the_daemon(
        world: SystemWorld, sample: Callable[..., SpawnedProcess]) -> None:
    """No address given: dbus-send finds /run/dbus/system_bus_socket (``-b /run/dbus``) and
    reaches the session manager's name, as a daemon waiting for SessionStateChanged does."""
    daemon = sample("dbus-send --system --print-reply --dest=org.freedesktop.DBus "
                    "/org/freedesktop/DBus org.freedesktop.DBus.NameHasOwner "
                    "string:org.chromium.SessionManager; echo exit=$?")
    assert daemon.wait(10) == 0
    out = daemon.output()
    assert "boolean true" in out and "exit=0" in out, out


def test_output_and_stop(world: SystemWorld, sample: Callable[..., SpawnedProcess]) -> None:
    daemon = sample('echo "to stdout"; echo "to stderr" >&2; exec sleep 600')
    wait_for(lambda: "to stderr" in daemon.output(), "the daemon's output")
    assert daemon.output() == "to stdout\nto stderr\n"
    assert daemon.pid is not None and os.path.exists(f"/proc/{daemon.pid}")
    assert daemon.stop() == -15  # SIGTERM, by pid
    assert not os.path.exists(f"/proc/{daemon.pid}")
    assert daemon.poll() == -15


def test_spawn_refuses_a_daemon_that_is_not_installed(world: SystemWorld) -> None:
    with pytest.raises(SystemWorldError, match="'biod' is not installed here"):
        world.spawn("biod", ["/bin/true"])


def test_a_failing_jail_is_reported_with_its_output(world: SystemWorld) -> None:
    with pytest.raises(SystemWorldError, match="before it ran /nonexistent"):
        world.spawn("sample", ["/nonexistent"])


def test_a_daemon_installed_after_boot_gets_its_stores(world: SystemWorld) -> None:
    world.install_daemon("late", 20300, 20300, 0o700)  # startup runs again
    daemon = world.spawn("late", ["/bin/sh", "-c", "exec sleep 600"])
    try:
        assert "- tmpfs run " in daemon.mountinfo()
        carol = world.login("carol@example.com")
        assert daemon.sees_store("carol@example.com")
        assert f" /run/daemon-store-cache/late/{carol} " in daemon.mountinfo()
    finally:
        daemon.stop()
        world.logout()


@pytest.mark.daemonstore(daemons=[SAMPLE])
def test_the_plugin_fixture_hands_out_a_booted_device(daemonstore_system_world: SystemWorld,
                                                       ) -> None:
    world = daemonstore_system_world
    assert world.booted and set(world.daemons) == {"sample"}
    daemon = world.spawn("sample", ["/bin/sh", "-c", NOTE_TAKER])
    world.login(ALICE)
    wait_for(lambda: vault_note(world, ALICE), "the note in alice's vault")
    status = world.run("daemonstore", "status", "--json")
    assert world.hash_of(ALICE) in status["stdout"], status
    assert daemon.poll() is None  # the fixture's teardown stops it


def _mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def test_teardown_stops_everything_and_the_host_mounts_never_change() -> None:
    """cryptohome-sim binding the stores itself (``hook=False``) and a guest this time; at
    close every process of the container is gone and the pytest process's mount table is the
    same, byte for byte (everything was mounted in the container's own namespaces)."""
    require_system_world()
    before = _mountinfo()
    with SystemWorld([SAMPLE], hook=False) as world:
        root_dir = world.container.root_dir
        assert os.listdir(root_dir) == []  # the container's tmpfs is not seen from here
        daemon = world.spawn("sample", ["/bin/sh", "-c", NOTE_TAKER])
        guest = world.login_guest()
        assert daemon.sees_store(guest)  # bound in mnt_chrome, propagated to the daemon
        wait_for(lambda: "wrote" in daemon.output(), "the note in the guest's store")
        assert _mountinfo() == before
        pids = [world.container.pid, world.container.init_pid, daemon.pid]
    assert daemon.returncode == -15 and "wrote" in (daemon.final_output or "")
    assert world.container.processes() == []
    assert [p for p in pids if os.path.exists(f"/proc/{p}")] == []
    assert not os.path.exists(root_dir)
    assert _mountinfo() == before


def test_a_failing_report_carries_every_spawned_process_output(
        world: SystemWorld, sample: Callable[..., SpawnedProcess]) -> None:
    """The plugin's report hook (registered by system_world with a config) adds one section
    per spawned process of each live world to a failed report, and nothing to a passed one."""
    from daemonstore.testing.system import _Reporter

    daemon = sample('echo "daemon says hello"; exec sleep 600')
    wait_for(lambda: "hello" in daemon.output(), "the daemon's output")

    def report_after_hook(failed: bool) -> list[tuple[str, str]]:
        report = pytest.TestReport("x", ("x", 0, "x"), {}, "failed" if failed else "passed",
                                   None, "call")
        hook = _Reporter().pytest_runtest_makereport(None, None)  # type: ignore[arg-type]
        next(hook)
        with pytest.raises(StopIteration) as done:
            hook.send(report)
            assert done.value.value is report
        return report.sections

    sections = report_after_hook(failed=True)
    assert (f"daemonstore system world: {daemon}", "daemon says hello\n") in sections
    assert report_after_hook(failed=False) == []


def test_a_container_that_cannot_be_built_says_why_and_leaves_nothing() -> None:
    require_system_world()
    before = _mountinfo()
    tmp = tempfile.gettempdir()
    dirs = {n for n in os.listdir(tmp) if n.startswith("daemonstore-container-")}
    spec = ContainerSpec(ro_binds=("/nonexistent-daemonstore-bind",))
    with pytest.raises(ContainerError, match=r"(?s)mount.*No such file or directory"):
        start_container(spec, ["/bin/true"], {})
    assert {n for n in os.listdir(tmp) if n.startswith("daemonstore-container-")} == dirs
    assert _mountinfo() == before


#: a daemon's question to session_manager, as its own user, on the system bus at its real path:
#: who is signed in (the daemon role grants it), and a StartSession (it does not); JSON out
ASK = """
import asyncio, json, os
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

async def main():
    bus = await MessageBus(bus_address="unix:path=/run/dbus/system_bus_socket",
                           bus_type=BusType.SYSTEM).connect()
    out = {"uid": os.getuid()}
    for member, sig, body in (("RetrievePrimarySession", "", []),
                              ("StartSession", "ss", ["mallory@example.com", ""])):
        reply = await bus.call(Message(
            destination="org.chromium.SessionManager", path="/org/chromium/SessionManager",
            interface="org.chromium.SessionManagerInterface", member=member,
            signature=sig, body=body))
        out[member] = (reply.body if reply.message_type is MessageType.METHOD_RETURN
                       else [reply.error_name, reply.sender])
    print(json.dumps(out), flush=True)
    bus.disconnect()

asyncio.run(main())
"""


def ask(world: SystemWorld, daemon: str, **kwargs: Any) -> dict[str, Any]:
    process = world.spawn(daemon, [sys.executable, "-c", ASK], **kwargs)
    assert process.wait(20) == 0, process.output()
    return dict(json.loads(process.output().splitlines()[-1]))


def test_a_daemon_asks_session_manager_as_its_own_user(world: SystemWorld) -> None:
    """The daemon role, granted to each template's owner at install: installed before boot
    (sample) or after (the bus and cryptohome-sim re-read the grants), the daemon's own user
    learns who is signed in, and may start no session; an unlisted uid learns nothing."""
    grant = world.run("cat", "/etc/dbus-1/system.d/daemonstore-sample.conf")
    assert grant["rc"] == 0 and '<policy user="sample">' in grant["stdout"], grant
    world.install_daemon("asker", 20400, 20400, 0o700)
    alice = world.login(ALICE)
    try:
        denied = ["org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus"]
        for daemon, uid in (("sample", 20200), ("asker", 20400)):
            out = ask(world, daemon)
            assert out == {"uid": uid, "RetrievePrimarySession": [ALICE, alice],
                           "StartSession": denied}, daemon
        out = ask(world, "sample", uid=65534, gid=65534)  # nobody: no grant for this uid
        assert out == {"uid": 65534, "RetrievePrimarySession": denied,
                       "StartSession": denied}
        assert world.signed_in() == [alice]  # mallory's StartSession never ran
    finally:
        world.logout()
