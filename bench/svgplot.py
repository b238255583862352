"""Small line plots as SVG text, in pure Python (bench helper: the benchmark report draws its
scaling charts with it, so matplotlib is not needed).

    chart = line_chart([("kernel", [(100, 24.1), (200, 64.6)]), ("model", [...])],
                       title="...", xlabel="namespaces", ylabel="ms")
    Path("out.svg").write_text(panels([chart, other], columns=2))

Axes are linear and start at 0 on y (a straight line through the points is what "linear in
scale" looks like); ticks are 1/2/5 x 10^k. Every text is XML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

Point = tuple[float, float]
Series = tuple[str, Sequence[Point]]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
MARGIN = {"left": 62, "right": 16, "top": 34, "bottom": 46}
_SVG = 'xmlns="http://www.w3.org/2000/svg"'


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


class Frame:
    """The mapping from data to pixels of one chart (x left to right, y bottom to top)."""

    def __init__(self, series: Sequence[Series], width: int, height: int) -> None:
        xs = [x for _, pts in series for x, _ in pts]
        ys = [y for _, pts in series for _, y in pts]
        if not xs:
            xs, ys = [0.0, 1.0], [0.0, 1.0]
        self.xticks = nice_ticks(min(xs), max(xs))
        self.yticks = nice_ticks(0.0, max(max(ys), 1e-9))
        self.x0, self.x1 = self.xticks[0], self.xticks[-1]
        self.y1 = self.yticks[-1]
        self.left, self.right = MARGIN["left"], width - MARGIN["right"]
        self.top, self.bottom = MARGIN["top"], height - MARGIN["bottom"]

    def px(self, x: float, y: float) -> tuple[float, float]:
        fx = (x - self.x0) / ((self.x1 - self.x0) or 1)
        fy = y / (self.y1 or 1)
        return (round(self.left + fx * (self.right - self.left), 2),
                round(self.bottom - fy * (self.bottom - self.top), 2))


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.2g}"


def line_chart(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str,
               width: int = 460, height: int = 300) -> str:
    """One chart: a polyline with dots per series, axes with ticks, a legend, a title."""
    frame = Frame(series, width, height)
    out = [f'<svg {_SVG} width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" '
           f'font-weight="bold">{escape(title)}</text>']
    for tick in frame.yticks:
        _, y = frame.px(frame.x0, tick)
        out.append(f'<line x1="{frame.left}" y1="{y}" x2="{frame.right}" y2="{y}" '
                   'stroke="#e0e0e0"/>')
        out.append(f'<text x="{frame.left - 6}" y="{y + 4}" text-anchor="end">'
                   f'{_fmt(tick)}</text>')
    for tick in frame.xticks:
        x, _ = frame.px(tick, 0)
        out.append(f'<line x1="{x}" y1="{frame.bottom}" x2="{x}" y2="{frame.bottom + 4}" '
                   'stroke="black"/>')
        out.append(f'<text x="{x}" y="{frame.bottom + 16}" text-anchor="middle">'
                   f'{_fmt(tick)}</text>')
    out.append(f'<polyline points="{frame.left},{frame.top} {frame.left},{frame.bottom} '
               f'{frame.right},{frame.bottom}" fill="none" stroke="black"/>')
    out.append(f'<text x="{(frame.left + frame.right) / 2}" y="{height - 8}" '
               f'text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{(frame.top + frame.bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(frame.top + frame.bottom) / 2})">'
               f'{escape(ylabel)}</text>')
    for i, (label, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        coords = [frame.px(x, y) for x, y in sorted(pts)]
        points = " ".join(f"{x},{y}" for x, y in coords)
        out.append(f'<polyline class="series" data-label={quoteattr(label)} points="{points}" '
                   f'fill="none" stroke="{color}" stroke-width="2"/>')
        out.extend(f'<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>' for x, y in coords)
        ly = frame.top + 8 + 15 * i
        out.append(f'<line x1="{frame.left + 10}" y1="{ly}" x2="{frame.left + 28}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{frame.left + 33}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def panels(charts: Sequence[str], columns: int = 2, width: int = 460,
           height: int = 300) -> str:
    """Several charts (made with the same width and height) in one SVG document, in a grid."""
    rows = max(1, math.ceil(len(charts) / columns))
    total_w, total_h = width * min(columns, max(len(charts), 1)), height * rows
    out = [f'<svg {_SVG} width="{total_w}" height="{total_h}" '
           f'viewBox="0 0 {total_w} {total_h}">']
    for i, chart in enumerate(charts):
        x, y = width * (i % columns), height * (i // columns)
        out.append(f'<g transform="translate({x} {y})">{chart}</g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
