"""``daemonstore cleanup --watch`` emits cryptohome's ``LowDiskSpace`` (docs/chromeos.md §6)
through cryptohome-sim on a private bus when a pass finds the state normal, aggressive or
critical, and says once when nobody can emit it. The disk is a model /home tmpfs of 64 MiB."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from cryptohome_sim.bus import PrivateBus
from daemonstore import command
from daemonstore.cli import main
from daemonstore.dbus import names
from daemonstore.testing.bus import ThreadedCryptohome
from daemonstore.world import World

pytestmark = pytest.mark.dbus
MiB = 1 << 20
LOW = ["--target", "100M", "--normal", "80M", "--aggressive", "10M", "--critical", "5M"]
FINE = ["--target", "8M", "--normal", "6M", "--aggressive", "4M", "--critical", "2M"]


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> World:
    world = World.model()
    world.host.mkdir("/home", 0o755)
    world.host.mount_tmpfs("small", "/home", data="size=64M")
    world.host.mkdir("/home/.shadow", 0o700)
    monkeypatch.setattr(command, "open_host", lambda root, **_: world.host)
    # the --system interlock asks about the process's namespace; the host here is a model
    monkeypatch.setattr(command, "in_initial_namespace", lambda: False)
    return world


def _watch(*sizes: str) -> Any:
    return CliRunner().invoke(main, ["cleanup", "--root", "/r", "--watch", "0.01",
                                     "--count", "2", *sizes], catch_exceptions=False)


def _signals(cryptohome_thread: ThreadedCryptohome) -> list[tuple[str, ...]]:
    core = cryptohome_thread.core
    return [c.args for c in cryptohome_thread.call(core.calls)
            if c.method == names.LOW_DISK_SIGNAL]


def test_low_space_emits_low_disk_space_each_pass(
        disk: World, cryptohome_thread: ThreadedCryptohome) -> None:
    free = disk.host.statvfs("/home/.shadow")[1]
    res = _watch(*LOW)
    assert res.exit_code == 0, res.output
    assert "LowDiskSpace not emitted" not in res.output
    assert _signals(cryptohome_thread) == [(str(free),), (str(free),)]  # every minute, §6


def test_enough_space_emits_nothing(disk: World,
                                    cryptohome_thread: ThreadedCryptohome) -> None:
    res = _watch(*FINE)
    assert res.exit_code == 0, res.output
    assert _signals(cryptohome_thread) == []


def test_without_cryptohome_it_says_so_once(disk: World, private_bus: PrivateBus) -> None:
    res = _watch(*LOW)
    assert res.exit_code == 0, res.output
    problems = [ln for ln in res.output.splitlines() if "LowDiskSpace not emitted" in ln]
    assert len(problems) == 1, res.output
    assert names.SERVICE_UNKNOWN in problems[0]
