"""Smoke test: ``python -m bench.signin --quick`` runs to the end and prints its figures as the
last line (one JSON object with the documented keys). Timings are never asserted here: that is
the benchmark's own report, on an otherwise idle machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]


def test_signin_bench_quick_runs_and_ends_with_its_figures() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.signin", "--quick", "--repeat", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("apply_ms", "floor_ms", "shell_ms", "dbus_e2e_ms", "plan_ms", "signout_ms",
                "ratio_floor", "speedup_shell", "ratio_dbus", "per_store_us", "met"):
        assert key in figures, key
    assert (figures["stores"], figures["namespaces"], figures["binds"]) == (64, 100, 128)
    assert figures["apply_ms"] > 0 and figures["floor_ms"] > 0 and figures["shell_ms"] > 0


@pytest.mark.dbus
def test_hook_bench_quick_runs_and_ends_with_its_figures() -> None:
    """``python -m bench.hook``: the hook on a private bus binds every round's stores (the
    bench itself checks each round's binds in every namespace and raises otherwise)."""
    proc = subprocess.run([sys.executable, "-m", "bench.hook", "--repeat", "1", "--stores", "4",
                           "--namespaces", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (figures["stores"], figures["namespaces"], figures["binds"]) == (4, 2, 8)
    assert figures["apply_ms"] > 0 and figures["hook_ms"] > 0
