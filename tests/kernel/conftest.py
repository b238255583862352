"""Kernel tests need root; every kernel action runs in a forked child inside a private mount
namespace (daemonstore.sandbox.run_in_sandbox), never in the pytest process.

Tests marked ``kernel`` skip with the reason when the machine cannot run them -- except when the
``CI`` environment variable is set: CI promises a machine that can, so there a missing capability
is a failure, never a silent skip.
"""

from __future__ import annotations

import os

import pytest

from daemonstore.sandbox import kernel_unavailable_reason


@pytest.fixture(scope="session")
def kernel_reason() -> str | None:
    """Why kernel tests cannot run here (None: they can); probed once, in a forked child."""
    return kernel_unavailable_reason()


@pytest.fixture(autouse=True)
def _require_kernel(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kernel") is None:
        return
    reason = request.getfixturevalue("kernel_reason")
    if reason is None:
        return
    if "CI" in os.environ:
        pytest.fail(f"CI is set, so kernel tests must run, but they cannot: {reason}",
                    pytrace=False)
    pytest.skip(reason)
