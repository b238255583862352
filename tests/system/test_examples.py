"""examples/mydaemon runs as its README says (``pytest examples/mydaemon -q``), as a daemon
author's own suite would: in a pytest of its own, with no conftest, the plugin registered by the
installed package (issue 16 "Done when").

Every scenario of the author's suite must have run, and passed, on the model, the kernel and the
system world (there as the daemon's own user, with the daemon role), with the naive daemon's data
loss shown, mydaemon's data kept even as root, and the quick-start's four kinds of test passed:
nothing skipped, nothing deselected. The run gets ``CI=true``, so a world that cannot run here
fails instead of skipping; it needs root and dbus-daemon, hence the marks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("sign_in", "sign_out", "two_users", "restart", "guest", "late_start",
             "keeps_data")
pytestmark = [pytest.mark.kernel, pytest.mark.dbus]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """The run's output, and test name -> passed / failure / error / skipped from its JUnit
    XML (names are unique across the two files)."""
    report = tmp_path_factory.mktemp("examples") / "junit.xml"
    env = {**os.environ, "CI": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/mydaemon", "-q", "-p", "no:cacheprovider",
         f"--junitxml={report}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert report.exists(), f"pytest wrote no report:\n{proc.stdout}\n{proc.stderr}"
    found: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[case.get("name", "")] = kinds[0] if kinds else "passed"
    return f"exit {proc.returncode}\n{proc.stdout}", found


@pytest.fixture(scope="module")
def outcomes(run: tuple[str, dict[str, str]]) -> dict[str, str]:
    return run[1]


def test_the_run_passes(run: tuple[str, dict[str, str]]) -> None:
    output, _ = run
    assert output.startswith("exit 0\n"), output[-6000:]


def test_every_scenario_ran_on_all_three_worlds(outcomes: dict[str, str]) -> None:
    want = {f"test_in_process[{s}-{world}]" for s in SCENARIOS for world in ("model", "kernel")}
    want |= {f"test_real_process[{s}]" for s in SCENARIOS}
    assert {name: outcomes.get(name, "did not run") for name in sorted(want)} == \
        dict.fromkeys(sorted(want), "passed")


def test_the_naive_daemon_and_the_quick_start(outcomes: dict[str, str]) -> None:
    want = ["test_keeps_data_even_as_root", "test_naive_daemon_loses_data", "test_model",
            "test_kernel", "test_bus", "test_real_process"]
    assert {name: outcomes.get(name, "did not run") for name in want} == \
        dict.fromkeys(want, "passed")


def test_nothing_else_and_nothing_skipped(outcomes: dict[str, str]) -> None:
    assert [name for name, kind in outcomes.items() if kind != "passed"] == []
    assert len(outcomes) == 2 * len(SCENARIOS) + len(SCENARIOS) + 2 + 4
