"""The ``cryptohome-sim`` command as a separate process: ``--model``, ``--spawn-bus``, the daemon
role's grant files (``--grants``, re-read on SIGHUP; ``--daemon-user`` with ``--spawn-bus``), and
``--root`` (refused in the machine's initial namespace; served inside a sandbox namespace)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cryptohome_sim.bus import PrivateBus
from daemonstore import paths
from daemonstore.cli import main as daemonstore_main
from daemonstore.dbus import names
from daemonstore.dbus.client import Client
from daemonstore.dbus.grants import grant_file_name, render_grant
from daemonstore.testing.bus import DAEMON_STAND_IN, spawn_cryptohome_sim

pytestmark = pytest.mark.dbus


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM the process this test started; its exit code and stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def _cryptohome_sim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cryptohome_sim", *args], capture_output=True,
                          text=True, timeout=30, env=env)


def test_model_service_with_daemonstore_login(private_bus: PrivateBus) -> None:
    proc, banner = spawn_cryptohome_sim("--model", "--address", private_bus.address)
    try:
        assert f"on {private_bus.address} (model host)" in banner
        runner = CliRunner()
        login = runner.invoke(daemonstore_main, ["login", "alice"])
        assert login.exit_code == 0, login.output
        logout = runner.invoke(daemonstore_main, ["logout"])
        assert logout.exit_code == 0, logout.output
        assert "session stopped" in logout.output
    finally:
        code, err = _stop(proc)
    assert code == 0, err


def test_no_daemon_stores_mounts_vaults_and_homes_only(private_bus: PrivateBus) -> None:
    """``--no-daemon-stores``: PreparePersistentVault mounts the vault and the home binds; the
    session hook (``daemonstore hook``) makes the store binds."""
    proc, _banner = spawn_cryptohome_sim("--model", "--no-daemon-stores")
    try:
        async def use() -> tuple[str, str]:
            async with await Client.connect(private_bus.address) as client:
                await client.install_daemon("biod", 0, 0, 0o755)
                result = await client.login("alice")
                return result.user_hash, await client.mountinfo()

        user_hash, mountinfo = asyncio.run(use())
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert f" {paths.vault_mount(user_hash)} " in mountinfo
    assert f" {paths.home_user(user_hash)} " in mountinfo
    assert f" {paths.user_store('biod', user_hash)} " not in mountinfo
    assert f" {paths.user_store('biod', user_hash, cache=True)} " not in mountinfo


def test_address_comes_from_the_environment(private_bus: PrivateBus) -> None:
    proc, banner = spawn_cryptohome_sim("--model", env=dict(os.environ))
    try:
        assert f"on {private_bus.address} " in banner
    finally:
        code, err = _stop(proc)
    assert code == 0, err


def test_second_instance_cannot_take_the_names(private_bus: PrivateBus) -> None:
    proc, _ = spawn_cryptohome_sim("--model")
    try:
        second = _cryptohome_sim("--model")
        assert second.returncode == 1
        assert "org.chromium.UserDataAuth is already owned" in second.stderr
    finally:
        _stop(proc)


def test_spawn_bus_serves_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    proc, banner = spawn_cryptohome_sim("--model", "--spawn-bus")
    try:
        first = banner.splitlines()[0]
        assert first.startswith("DBUS_SYSTEM_BUS_ADDRESS=unix:path=")
        address = first.split("=", 1)[1]
        bus_pid = int(banner.splitlines()[1].split()[2].rstrip(","))

        async def use() -> str:
            async with await Client.connect(address) as client:
                await client.login("alice")
                return await client.session_state()

        assert asyncio.run(use()) == names.STARTED
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    with pytest.raises(ProcessLookupError):
        os.kill(bus_pid, 0)  # the private dbus-daemon went with it


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "--root", "/tmp"], "give one of --model"),
    (["--model", "--spawn-bus", "--address", "unix:path=/x"], "exclude each other"),
    (["--model", "--vault", "loop"], "--vault loop: the loop vault needs the kernel backend"),
    (["--model", "--vault", "zfs"], "Invalid value for '--vault'"),
    (["--model", "--daemon-user", "bin"], "--daemon-user needs --spawn-bus"),
    (["--model", "--spawn-bus", "--daemon-user", "root"], "root may call everything already"),
])
def test_bad_input_exits_2(args: list[str], message: str, private_bus: PrivateBus) -> None:
    result = _cryptohome_sim(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_no_address_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    result = _cryptohome_sim("--model", env=env)
    assert result.returncode == 2
    assert "no bus address" in result.stderr


def test_root_refused_outside_a_private_namespace(private_bus: PrivateBus,
                                                  tmp_path: Any) -> None:
    """KernelHost refuses the machine's initial mount namespace (or a root that is not a tmpfs
    mount point); the command says so and exits 2 without touching the bus."""
    result = _cryptohome_sim("--root", str(tmp_path))
    assert result.returncode == 2
    # in the initial namespace the --system interlock says so first; elsewhere KernelHost
    # refuses a root that is not a tmpfs mount point
    assert (result.stderr.startswith(f"Error: --root {tmp_path}: ")
            or "refusing the machine's initial mount namespace without --system"
            in result.stderr), result.stderr
    assert "refus" in result.stderr or "not a tmpfs" in result.stderr


# ---- the kernel: --root inside a sandbox namespace -----------------------------------------------


def _serve_kernel_and_login(host: Any, address: str) -> dict[str, Any]:
    """In run_in_sandbox's child (private namespace, tmpfs at host.root): run the real command
    on that root, sign alice in and out over the bus, and report what the kernel showed."""
    proc, banner = spawn_cryptohome_sim("--root", host.root, "--address", address)
    try:
        async def drive() -> dict[str, Any]:
            async with await Client.connect(address) as client:
                await client.install_daemon("biod", 0, 0, 0o755)
                async with client.session_states() as states:
                    login = await client.login("alice")
                    started = await asyncio.wait_for(states.get(), 5)
                    during = host.mountinfo()
                    await client.logout()
                    stopped = [await asyncio.wait_for(states.get(), 5) for _ in range(2)]
                return {"hash": login.user_hash, "started": started, "stopped": stopped,
                        "during": during, "after": host.mountinfo()}

        result = asyncio.run(drive())
    finally:
        code, err = _stop(proc)
    result.update(banner=banner, code=code, err=err)
    return result


@pytest.mark.kernel
def test_root_serves_a_kernel_host_in_a_sandbox(private_bus: PrivateBus) -> None:
    from daemonstore.kernel.sandbox import run_in_sandbox

    out = run_in_sandbox(_serve_kernel_and_login, private_bus.address)
    assert "(kernel host)" in out["banner"]
    assert out["code"] == 0, out["err"]
    assert out["started"] == names.STARTED
    assert out["stopped"] == [names.STOPPING, names.STOPPED]
    store = paths.user_store("biod", out["hash"])
    assert f" {paths.vault_mount(out['hash'])} " in out["during"]
    assert f" {store} " in out["during"]
    assert f" {store} " not in out["after"]
    assert paths.vault_mount(out["hash"]) not in out["after"]


def _serve_loop_vault_and_login(host: Any, address: str) -> dict[str, Any]:
    """Like _serve_kernel_and_login with ``--vault loop``: alice's vault is an ext4 image on a
    loop device; whatever happens, no loop device stays attached (global resource)."""
    from daemonstore import session
    from daemonstore.kernel import loop as kernel_loop

    proc, banner = spawn_cryptohome_sim("--root", host.root, "--address", address,
                                        "--vault", "loop")
    try:
        async def drive() -> dict[str, Any]:
            async with await Client.connect(address) as client:
                await client.install_daemon("biod", 0, 0, 0o755)
                login = await client.login("alice")
                during = host.mountinfo()
                await client.logout()
                # then the guest, in mnt_chrome, made by the service process itself (refused
                # while alice is mounted, as ChromeOS)
                guest = await client.login(paths.GUEST_USER, guest=True)
                active = await client.is_guest_session_active()
                during_guest = host.mountinfo()
                await client.logout()
                return {"hash": login.user_hash, "during": during, "after": host.mountinfo(),
                        "guest": guest.user_hash, "active": active,
                        "during_guest": during_guest}

        result = asyncio.run(drive())
    finally:
        code, err = _stop(proc)
        cleared = []
        for name in host.listdir(paths.SHADOW) if host.exists(paths.SHADOW) else []:
            if host.exists(f"{paths.SHADOW}/{name}/vault.img"):
                session.sign_out(host, name)
                cleared += kernel_loop.detach_image(host, paths.vault_image(name))
    result.update(banner=banner, code=code, err=err, cleared=cleared,
                  devices=kernel_loop.loop_devices_of(host, paths.vault_image(result["hash"])))
    return result


@pytest.mark.kernel
def test_root_with_the_loop_vault(private_bus: PrivateBus) -> None:
    from daemonstore.kernel import loop as kernel_loop
    from daemonstore.kernel.sandbox import run_in_sandbox

    if kernel_loop.mkfs_command() is None:
        pytest.skip("needs mkfs.ext4 (Debian: e2fsprogs)")
    out = run_in_sandbox(_serve_loop_vault_and_login, private_bus.address)
    assert out["code"] == 0, out["err"]
    vault = paths.vault_mount(out["hash"])
    (line,) = [x for x in out["during"].splitlines() if f" {vault} " in x]
    assert " - ext4 /dev/loop" in line
    assert f" {paths.user_store('biod', out['hash'])} " in out["during"]
    assert vault not in out["after"]
    assert out["cleared"] == [] and out["devices"] == []
    guest_store = paths.user_store("biod", out["guest"])
    assert out["active"] and f" {guest_store} " in out["during_guest"]  # propagated to init
    assert f" {guest_store} " not in out["after"]


def _without_address(host: Any) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    result = _cryptohome_sim("--root", host.root, env=env)
    return result.returncode, result.stderr


@pytest.mark.kernel
def test_root_without_address_uses_the_system_socket_under_it() -> None:
    """docs/architecture.md §7: ``$DBUS_SYSTEM_BUS_ADDRESS``, else ``/run/dbus/system_bus_socket``
    under the root (here a sandbox root with no bus: a clear failure naming the socket)."""
    from daemonstore.kernel.sandbox import run_in_sandbox

    code, err = run_in_sandbox(_without_address)
    assert code == 1, err
    assert "cannot connect to the bus at unix:path=" in err
    assert "/run/dbus/system_bus_socket" in err


# ---- the daemon role: grant files, read at start and on SIGHUP -----------------------------------

PRIMARY = ("RetrievePrimarySession", names.SESSION_NAME, names.SESSION_PATH, names.SESSION_IFACE,
           "RetrievePrimarySession", "", [])
START = ("StartSession", names.SESSION_NAME, names.SESSION_PATH, names.SESSION_IFACE,
         "StartSession", "ss", ["mallory@example.com", ""])


async def _as_daemon_user(address: str) -> dict[str, list[str]]:
    """RetrievePrimarySession and StartSession from the daemon stand-in (a forked child):
    label -> [outcome, who answered, text]."""
    from tests.hardening.test_caller_check import ask_as

    out = await ask_as(pwd.getpwnam(DAEMON_STAND_IN).pw_uid, address, [PRIMARY, START])
    return dict(out["answers"])


def _next_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        assert proc.stdout is not None
        return pool.submit(proc.stdout.readline).result(timeout)
    finally:
        pool.shutdown(wait=False)


@pytest.mark.asyncio
@pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")
async def test_grants_are_read_at_start_and_again_on_sighup(private_bus: PrivateBus,
                                                            tmp_path: Path) -> None:
    """The bus (the fixture's grant) lets the daemon stand-in through; the service follows its
    own grant directory: refused with none, allowed after a grant and SIGHUP, refused again
    once it is gone -- without a restart (alice stays signed in). StartSession is the bus's
    to refuse throughout."""
    grants = tmp_path / "system.d"
    grants.mkdir()
    proc, banner = spawn_cryptohome_sim("--model", "--address", private_bus.address,
                                        "--grants", str(grants))
    try:
        assert f"daemon users from {grants}: none" in banner
        async with await Client.connect(private_bus.address) as root:
            await root.login("alice@example.com")
            before = await _as_daemon_user(private_bus.address)
            (grants / grant_file_name(DAEMON_STAND_IN)).write_text(render_grant(DAEMON_STAND_IN))
            os.chmod(grants / grant_file_name(DAEMON_STAND_IN), 0o644)
            proc.send_signal(signal.SIGHUP)
            assert _next_line(proc) == f"cryptohome-sim: daemon users from {grants}: bin\n"
            granted = await _as_daemon_user(private_bus.address)
            os.unlink(grants / grant_file_name(DAEMON_STAND_IN))
            proc.send_signal(signal.SIGHUP)
            assert _next_line(proc) == f"cryptohome-sim: daemon users from {grants}: none\n"
            revoked = await _as_daemon_user(private_bus.address)
            assert await root.session_state() == names.STARTED
            await root.logout()
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    service = before["RetrievePrimarySession"][1]
    assert service.startswith(":")  # a unique name: the service answered, not the bus
    assert before["RetrievePrimarySession"][:2] == [names.ACCESS_DENIED, service]
    assert granted["RetrievePrimarySession"][:2] == ["allowed", service]
    assert revoked["RetrievePrimarySession"][:2] == [names.ACCESS_DENIED, service]
    for answers in (before, granted, revoked):
        assert answers["StartSession"][:2] == [names.ACCESS_DENIED, "org.freedesktop.DBus"]


@pytest.mark.asyncio
@pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")
async def test_spawn_bus_with_a_daemon_user_grants_both_layers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    proc, banner = spawn_cryptohome_sim("--model", "--spawn-bus", "--daemon-user",
                                        DAEMON_STAND_IN)
    try:
        address = banner.splitlines()[0].split("=", 1)[1]
        assert f"system.d: {DAEMON_STAND_IN}\n" in banner
        answers = await _as_daemon_user(address)
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert answers["RetrievePrimarySession"][0] == "allowed"
    assert answers["StartSession"][:2] == [names.ACCESS_DENIED, "org.freedesktop.DBus"]
