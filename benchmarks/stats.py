# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The one statistics helper every measurement uses, so medians and p95s mean the same thing."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: int) -> float:
    """The p-th percentile, linear interpolation between the closest ranks (numpy's default)."""
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[p - 1])


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def summary(values: Sequence[float], digits: int = 3) -> dict:
    """median, p95, min, max and n, rounded for the results file."""
    return {
        "median": round(median(values), digits),
        "p95": round(p95(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")
