"""Curve fits the benchmarks judge scaling by (pure Python, no NumPy for four points)."""

from __future__ import annotations

import math


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope of y against x (per unit of x) and R^2 of that line."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))
    ss = sum((y - my) ** 2 for y in ys)
    res = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, (1 - res / ss) if ss else 1.0


def exponent(xs: list[float], ys: list[float]) -> float:
    """k of y ~ x^k, fitted over all points (least squares in log-log): 1 for proportional
    growth, below 1 when a fixed part dominates, above 1 for superlinear growth. Over an 8x
    range of sizes one noisy point moves it far less than it moves a single doubling."""
    slope, _ = linear_fit([math.log(x) for x in xs], [math.log(max(y, 1e-12)) for y in ys])
    return slope


def doublings(ys: list[float]) -> list[float]:
    """y(next) / y for neighbouring sizes (each size twice the one before)."""
    return [round(b / a, 3) for a, b in zip(ys, ys[1:], strict=False)]
