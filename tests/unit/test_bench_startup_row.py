"""README's startup benchmark row (bench/run_all.py ``table``) and bench/boot.py's
``within_target`` judge the same figure, CPU time: the headline, the target check and the label
agree, and the wall-clock ratio is only shown beside them."""

from __future__ import annotations

from typing import Any

import pytest

from bench import boot, run_all


def _startup(cpu: tuple[float, float], wall: tuple[float, float]) -> dict[str, Any]:
    med = {"ours": wall[0], "floor": wall[1], "path_floor": 1.0, "shell": 500.0, "plan": 1.0,
           "ours_cpu": cpu[0], "floor_cpu": cpu[1]}
    return boot.figures(64, 15, med)


def _row(fig: dict[str, Any]) -> list[str]:
    lines = run_all.table({"startup": fig}).splitlines()
    row = next(line for line in lines if line.startswith("| startup"))
    return [cell.strip() for cell in row.strip("|").split("|")]


@pytest.mark.parametrize(("cpu", "wall", "met"), [
    ((4.8, 4.0), (12.0, 8.0), True),    # 1.2x in CPU time, 1.5x on the wall clock: met
    ((5.6, 4.0), (9.6, 8.0), False),    # 1.4x in CPU time, 1.2x on the wall clock: not met
])
def test_headline_and_check_are_both_cpu_time(cpu: tuple[float, float],
                                              wall: tuple[float, float], met: bool) -> None:
    fig = _startup(cpu, wall)
    assert fig["within_target"] is met
    label, measured, target, ok = _row(fig)
    assert "in CPU time" in label and target == "<= 1.3x"
    assert measured.startswith(f"{cpu[0] / cpu[1]:.2f}x ({cpu[0]:.2f} ms vs {cpu[1]:.2f} ms")
    assert f"wall clock {wall[0] / wall[1]:.2f}x" in measured
    assert ok == ("yes" if met else "**no**")
