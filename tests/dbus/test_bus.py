"""cryptohome_sim.bus: the rendered configuration and a private dbus-daemon's life cycle."""

from __future__ import annotations

import os

import pytest

from cryptohome_sim import bus as private_bus


def test_policy_files_shape() -> None:
    """Two shipped files, default deny, root owns; rendering for other users changes only the
    ``<policy user=...>`` attributes."""
    assert private_bus.POLICY_FILES == ("org.chromium.UserDataAuth.conf",
                                        "org.chromium.SessionManager.conf")
    uda, sm = (private_bus.render_policy(name) for name in private_bus.POLICY_FILES)
    assert uda == private_bus.policy_text(private_bus.POLICY_FILES[0])
    for text, name in ((uda, "org.chromium.UserDataAuth"), (sm, "org.chromium.SessionManager")):
        assert '<policy user="root">' in text and '<policy user="chronos">' in text
        assert f'<allow own="{name}"/>' in text
        assert f'<deny own="{name}"/>' in text and f'<deny send_destination="{name}"/>' in text
        assert text.count("<allow own=") == 1  # only root owns the name
    assert 'send_member="PreparePersistentVault"' in uda
    assert "MountEx" not in uda and "CryptohomeMountInterface" not in uda
    assert 'send_member="StartSession"' in sm
    other = private_bus.render_policy(private_bus.POLICY_FILES[0], "builder", "20001")
    assert '<policy user="builder">' in other and '<policy user="20001">' in other
    assert 'user="root"' not in other and 'user="chronos"' not in other
    assert other.replace('"builder"', '"root"').replace('"20001"', '"chronos"') == uda
    with pytest.raises(ValueError, match="no policy file"):
        private_bus.render_policy("../../etc/passwd")
    config = private_bus.render_config("/tmp/x/sock", "/tmp/x/system.d")
    assert "<listen>unix:path=/tmp/x/sock</listen>" in config
    assert "<auth>EXTERNAL</auth>" in config
    assert "<includedir>/tmp/x/system.d</includedir>" in config


@pytest.mark.dbus
def test_private_bus_lifecycle() -> None:
    bus = private_bus.start_private_bus()
    try:
        assert bus.address.startswith(f"unix:path={bus.socket_path},")
        assert os.stat(bus.socket_path).st_mode & 0o777 == 0o666
        assert os.stat(bus.directory).st_mode & 0o777 == 0o755
        os.kill(bus.pid, 0)  # running
        assert sorted(p.name for p in (bus.directory / "system.d").iterdir()) == sorted(
            private_bus.POLICY_FILES)
    finally:
        bus.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(bus.pid, 0)
    assert not bus.directory.exists()


def test_a_failing_dbus_daemon_is_a_clear_error() -> None:
    with pytest.raises(private_bus.BusError, match="exited"):
        private_bus.start_private_bus(dbus_daemon="/bin/false")
