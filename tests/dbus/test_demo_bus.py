"""``daemonstore demo --bus``: the same story with sign-ins over a private D-Bus bus through
cryptohome_sim (a private dbus-daemon started and stopped by the demo itself)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from daemonstore import demo
from daemonstore.cli import main

pytestmark = pytest.mark.dbus


def _without_guest(facts: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in facts.items() if k != "guest"}


def test_demo_over_the_bus_tells_the_same_story() -> None:
    over_bus = demo.run_demo(bus=True)
    in_process = demo.run_demo()
    assert _without_guest(over_bus.facts) == _without_guest(in_process.facts)
    assert ("  over D-Bus: MountEx('alice@example.com'), StartSession -> "
            "RetrieveSessionState='started', RetrievePrimarySession='alice@example.com'"
            in over_bus.lines)
    assert ("  over D-Bus: StopSession, Unmount('alice@example.com') -> "
            "RetrieveSessionState='stopped', RetrievePrimarySession='(none)'" in over_bus.lines)
    guest = over_bus.facts["guest"]
    if guest == "not available":  # cryptohome_sim without guest sessions says so; never faked
        assert any(line.startswith("  not available in this build: cryptohome_sim refuses "
                                   "guests") for line in over_bus.lines)
    else:
        assert isinstance(guest, dict) and guest["seen_after"] == {}


def test_demo_cli_bus() -> None:
    res = CliRunner().invoke(main, ["demo", "--bus"])
    assert res.exit_code == 0, res.output
    assert "  over D-Bus: MountEx('bob@example.com'), StartSession -> " \
           "RetrieveSessionState='started', RetrievePrimarySession='bob@example.com'" \
           in res.output.splitlines()


@pytest.mark.kernel
def test_demo_kernel_over_the_bus() -> None:
    result = demo.run_demo(kernel=True, bus=True)
    assert result.backend == "kernel"
    assert _without_guest(result.facts) == _without_guest(demo.run_demo().facts)
