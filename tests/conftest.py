"""Guards shared by the whole suite: tests marked ``kernel`` need root and a private mount
namespace, tests marked ``dbus`` need ``dbus-daemon``, tests marked ``valgrind`` need valgrind
(the instruction-count benchmark's smoke test). Without them the tests skip with the reason
-- except when the ``CI`` environment variable is set: CI promises a machine that can
(``.ci/run`` installs ``dbus`` and ``valgrind``; CI runs as root), so there a missing capability
is a failure, never a silent skip. Every kernel action runs in a forked child inside a private
mount namespace (``daemonstore.kernel.sandbox.run_in_sandbox``), never in the pytest process.
"""

from __future__ import annotations

import shutil

import pytest

from cryptohome_sim.bus import find_dbus_daemon
from daemonstore.kernel.sandbox import kernel_unavailable_reason
from daemonstore.testing.settings import skip_or_fail  # the plugin's rule, one for the suite


@pytest.fixture(scope="session")
def kernel_reason() -> str | None:
    """Why kernel tests cannot run here (None: they can); probed once, in a forked child."""
    return kernel_unavailable_reason()


@pytest.fixture(autouse=True)
def _require_kernel(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kernel") is None:
        return
    reason = request.getfixturevalue("kernel_reason")
    if reason is not None:
        skip_or_fail("kernel", reason)


@pytest.fixture(autouse=True)
def _require_dbus_daemon(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("dbus") is None or find_dbus_daemon() is not None:
        return
    skip_or_fail("D-Bus", "dbus-daemon is not installed (Debian package 'dbus')")


@pytest.fixture(autouse=True)
def _require_valgrind(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("valgrind") is None or shutil.which("valgrind"):
        return
    skip_or_fail("valgrind", "valgrind is not installed (Debian package 'valgrind')")
