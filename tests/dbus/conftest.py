"""D-Bus tests start their own private ``dbus-daemon`` (never the machine's buses).

Tests marked ``dbus`` skip when ``dbus-daemon`` is not installed -- except when the ``CI``
environment variable is set: ``.ci/run`` installs the Debian package ``dbus``, so there a missing
daemon is a failure, never a silent skip. Unmarked tests here (the core's unit tests) run
everywhere. Tests also marked ``kernel`` need root and a private mount namespace, as in
tests/kernel.
"""

from __future__ import annotations

from daemonstore.testing.bus import (  # noqa: F401 - fixtures, used by name
    bus_world,
    cryptohome_client,
    cryptohome_service,
    cryptohome_thread,
    private_bus,
)


