"""Smoke test of ``python -m bench.instructions``: the callgrind counts it judges linearity by
are exact (the same workload counted twice gives the same number) and it ends with its figures.
The counts are not timings: they do not depend on the machine's load, so the model's linear
propagation cost (marginal instructions per namespace flat within 15% over 8x) is asserted too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import instructions

pytestmark = pytest.mark.valgrind

ROOT = Path(__file__).resolve().parents[2]


def test_instruction_counts_repeat_exactly_and_model_propagation_is_linear() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.instructions", "--quick",
                           "--only", "propagation"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fig["repeatable"] is True
    series = fig["propagation"]
    counts = series["phases"]["binds + umounts"]["instructions"]
    assert series["sizes"] == [10, 20, 40, 80]
    assert all(b > a > 0 for a, b in zip(counts, counts[1:], strict=False))
    assert series["phases"]["binds + umounts"]["linear"] is True, series
    assert fig["linear"] is True


def test_series_figures_tell_linear_from_quadratic_and_constant() -> None:
    sizes = [10, 20, 40, 80]
    linear = instructions.series_figures(sizes, [1000 + 50 * n for n in sizes])
    assert linear["marginal"] == [50.0, 50.0, 50.0] and linear["linear"] is True
    quadratic = instructions.series_figures(sizes, [1000 + 50 * n + n * n for n in sizes])
    assert quadratic["spread"] > 1.15 and quadratic["linear"] is False
    constant = instructions.series_figures(sizes, [10_000, 10_003, 9_998, 10_001])
    assert constant["spread"] == 1.0 and constant["linear"] is True
    falling = instructions.series_figures(sizes, [500, 400, 300, 200])
    assert falling["spread"] is None and falling["linear"] is False
