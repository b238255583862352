"""D-Bus tests start their own private ``dbus-daemon`` (never the machine's buses).

Tests marked ``dbus`` skip when ``dbus-daemon`` is not installed -- except when the ``CI``
environment variable is set: ``.ci/run`` installs the Debian package ``dbus``, so there a missing
daemon is a failure, never a silent skip. Unmarked tests here (the core's unit tests) run
everywhere. Tests also marked ``kernel`` need root and a private mount namespace, as in
tests/kernel.
"""

from __future__ import annotations

import os

import pytest

from cryptohome_sim.bus import find_dbus_daemon
from daemonstore.testing_bus import (  # noqa: F401 - fixtures, used by name
    bus_world,
    cryptohome_client,
    cryptohome_service,
    cryptohome_thread,
    private_bus,
)


@pytest.fixture(autouse=True)
def _require_dbus_daemon(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("dbus") is None or find_dbus_daemon() is not None:
        return
    reason = "dbus-daemon is not installed (Debian package 'dbus')"
    if "CI" in os.environ:
        pytest.fail(f"CI is set, so D-Bus tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _require_kernel(request: pytest.FixtureRequest) -> None:
    """Tests also marked ``kernel`` follow tests/kernel's rule: skip without root and
    unshare(CLONE_NEWNS), unless CI is set."""
    if request.node.get_closest_marker("kernel") is None:
        return
    from daemonstore.sandbox import kernel_unavailable_reason

    reason = kernel_unavailable_reason()
    if reason is None:
        return
    if "CI" in os.environ:
        pytest.fail(f"CI is set, so kernel tests must run, but they cannot: {reason}",
                    pytrace=False)
    pytest.skip(reason)
