"""bench/svgplot.py: the benchmark report's pure-Python SVG line charts (valid SVG, points placed
to scale). The benchmarks themselves are never timed in tests."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def svgplot() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "svgplot.py"
    spec = importlib.util.spec_from_file_location("svgplot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in
            (pair.split(",") for pair in polyline.attrib["points"].split())]


def test_chart_is_valid_svg_with_one_polyline_per_series(svgplot: ModuleType) -> None:
    text = svgplot.line_chart([("kernel", [(16, 1.0), (32, 2.0)]), ("model <&>", [(16, 3.0)])],
                              title="t & <title>", xlabel="stores", ylabel="ms")
    root = ET.fromstring(text)  # raises on invalid XML (escaping included)
    assert root.tag == f"{SVG}svg"
    series = root.findall(f"{SVG}polyline[@class='series']")
    assert [s.attrib["data-label"] for s in series] == ["kernel", "model <&>"]
    assert len(root.findall(f"{SVG}circle")) == 3
    assert "t & <title>" in "".join(root.itertext())


def _steps(values: list[float]) -> list[float]:
    return [b - a for a, b in zip(values, values[1:], strict=False)]


def test_points_are_placed_to_scale(svgplot: ModuleType) -> None:
    data = [(25, 10.0), (50, 20.0), (100, 40.0), (200, 80.0)]  # a straight line through 0
    root = ET.fromstring(svgplot.line_chart([("a", data)], title="", xlabel="", ylabel=""))
    (line,) = root.findall(f"{SVG}polyline[@class='series']")
    pts = _points(line)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # right, and up (y grows down)
    # linear scales: pixel steps proportional to data steps, on both axes
    data_dx = _steps([float(x) for x, _ in data])
    px_per_x = [p / d for p, d in zip(_steps(xs), data_dx, strict=True)]
    px_per_y = [-p / d for p, d in zip(_steps(ys), _steps([y for _, y in data]), strict=True)]
    assert max(px_per_x) - min(px_per_x) < 0.01 and max(px_per_y) - min(px_per_y) < 0.01
    frame = svgplot.Frame([("a", data)], 460, 300)
    assert frame.px(0, 0)[1] == frame.bottom  # y starts at 0, on the x axis
    assert frame.px(200, 80.0) == pts[-1]
    assert all(svgplot.MARGIN["left"] <= x <= 460 for x in xs)
    assert all(0 <= y <= 300 - svgplot.MARGIN["bottom"] for y in ys)


def test_nice_ticks_cover_the_range(svgplot: ModuleType) -> None:
    ticks = svgplot.nice_ticks(0, 87.3)
    assert ticks[0] == 0 and ticks[-1] >= 87.3
    steps = {round(step, 9) for step in _steps(ticks)}
    assert len(steps) == 1 and steps.pop() in (10, 20, 25, 50)


def test_panels_nest_charts_in_one_document(svgplot: ModuleType) -> None:
    charts = [svgplot.line_chart([("a", [(1, 1.0), (2, 2.0)])], title=str(i), xlabel="x",
                                 ylabel="y") for i in range(3)]
    root = ET.fromstring(svgplot.panels(charts, columns=2))
    assert root.tag == f"{SVG}svg"
    assert (root.attrib["width"], root.attrib["height"]) == ("920", "600")
    assert len(root.findall(f"{SVG}g/{SVG}svg")) == 3
