"""Kernel tests need root; every kernel action runs in a forked child inside a private mount
namespace (daemonstore.kernel.sandbox.run_in_sandbox), never in the pytest process.

Tests marked ``kernel`` skip with the reason when the machine cannot run them -- except when the
``CI`` environment variable is set: CI promises a machine that can, so there a missing capability
is a failure, never a silent skip.
"""

from __future__ import annotations

# the guards live in tests/conftest.py (one rule for tests/kernel, tests/dbus, tests/hardening)
