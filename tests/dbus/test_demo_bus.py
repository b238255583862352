"""``daemonstore demo --bus``: the same story with sign-ins over a private D-Bus bus through
cryptohome_sim (a private dbus-daemon started and stopped by the demo itself)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from daemonstore.cli import main
from daemonstore.demo import story as demo

pytestmark = pytest.mark.dbus


def test_demo_over_the_bus_tells_the_same_story() -> None:
    over_bus = demo.run_demo(bus=True)
    assert over_bus.facts == demo.run_demo().facts  # guest included: PrepareGuestVault
    assert ("  over D-Bus: StartAuthSession('alice@example.com'), CreatePersistentUser, "
            "PreparePersistentVault, StartSession -> RetrieveSessionState='started', "
            "RetrievePrimarySession='alice@example.com'" in over_bus.lines)
    assert ("  over D-Bus: StopSession, Unmount{} (everyone) -> "
            "RetrieveSessionState='stopped', RetrievePrimarySession='(none)'" in over_bus.lines)
    assert ("  over D-Bus: PrepareGuestVault, StartSession('$guest') -> "
            "RetrieveSessionState='started', RetrievePrimarySession='(none)', "
            "IsGuestSessionActive=True" in over_bus.lines)
    # alice comes back: her account exists, so she authenticates instead of being created
    assert ("  over D-Bus: StartAuthSession('alice@example.com'), AuthenticateAuthFactor, "
            "PreparePersistentVault, StartSession -> RetrieveSessionState='started', "
            "RetrievePrimarySession='alice@example.com'" in over_bus.lines)


def test_demo_cli_bus() -> None:
    res = CliRunner().invoke(main, ["demo", "--bus"])
    assert res.exit_code == 0, res.output
    assert ("  over D-Bus: StartAuthSession('bob@example.com'), CreatePersistentUser, "
            "PreparePersistentVault, StartSession -> RetrieveSessionState='started', "
            "RetrievePrimarySession='bob@example.com'") in res.output.splitlines()


@pytest.mark.kernel
def test_demo_kernel_over_the_bus() -> None:
    result = demo.run_demo(kernel=True, bus=True)
    assert result.backend == "kernel"
    assert result.facts == demo.run_demo().facts
