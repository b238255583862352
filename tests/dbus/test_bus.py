"""cryptohome_sim.bus: the rendered configuration and a private dbus-daemon's life cycle."""

from __future__ import annotations

import os

import pytest

from cryptohome_sim import bus as private_bus


def test_policy_file_shape() -> None:
    """The shipped policy names root; rendering for another user changes only that."""
    text = private_bus.render_policy()
    assert '<policy user="root">' in text
    assert '<allow own="org.chromium.UserDataAuth"/>' in text
    assert 'send_member="GetSanitizedUsername"' in text
    assert 'send_member="MountEx"' not in text  # mount methods: root's blanket allow only
    other = private_bus.render_policy("builder")
    assert '<policy user="builder">' in other and 'user="root"' not in other
    config = private_bus.render_config("/tmp/x/sock", "/tmp/x/policy.conf")
    assert "<listen>unix:path=/tmp/x/sock</listen>" in config
    assert "<auth>EXTERNAL</auth>" in config
    assert "<include>/tmp/x/policy.conf</include>" in config


@pytest.mark.dbus
def test_private_bus_lifecycle() -> None:
    bus = private_bus.start_private_bus()
    try:
        assert bus.address.startswith(f"unix:path={bus.socket_path},")
        assert os.stat(bus.socket_path).st_mode & 0o777 == 0o666
        assert os.stat(bus.directory).st_mode & 0o777 == 0o755
        os.kill(bus.pid, 0)  # running
    finally:
        bus.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(bus.pid, 0)
    assert not bus.directory.exists()


def test_a_failing_dbus_daemon_is_a_clear_error() -> None:
    with pytest.raises(private_bus.BusError, match="exited"):
        private_bus.start_private_bus(dbus_daemon="/bin/false")
