"""Confidence intervals and paired comparisons for per-example scores.

One rule for every interval of a mean: a rate of right/wrong (0/1) scores gets the Wilson
score interval, and a paired difference of two such rates Newcombe's hybrid score interval
for paired data (both stay informative at 0% and 100%, where the percentile bootstrap
collapses to a point); every other score (ROUGE, similarity, judge scores) keeps the
percentile bootstrap. Each entry names its method in `interval`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np


def bootstrap_ci(
    scores: Sequence[float], samples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(samples, values.size))
    means = values[idx].mean(axis=1)
    tail = (1 - level) / 2
    return (float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def is_binary(*series: Sequence[float]) -> bool:
    """Whether every value is 0 or 1 (right or wrong), so a rate's score intervals apply."""
    return all(x in (0.0, 1.0) for values in series for x in values)


def _z(level: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - level) / 2)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: never empty at 0 or n successes, and within
    [0, 1]; (nan, nan) when n is 0."""
    if n == 0:
        return (math.nan, math.nan)
    z, p = _z(level), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def newcombe_paired_interval(
    both: int, a_only: int, b_only: int, neither: int, level: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for rate(a) - rate(b) on the same
    examples, from the 2x2 table of right/wrong pairs: the Wilson intervals of both rates,
    combined with their correlation (continuity-corrected phi, 0 when a margin is empty).
    It never collapses to a point; (nan, nan) when there is no pair."""
    n = both + a_only + b_only + neither
    if n == 0:
        return (math.nan, math.nan)
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = wilson_interval(both + a_only, n, level)
    l2, u2 = wilson_interval(both + b_only, n, level)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = 0.0
    if margins > 0:
        cross = both * neither - a_only * b_only
        corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
        phi = corrected / math.sqrt(margins)
    d = p1 - p2
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2
    return (max(-1.0, d - math.sqrt(max(below, 0.0))), min(1.0, d + math.sqrt(max(above, 0.0))))


def mean_interval(
    values: Sequence[float], samples: int, seed: int, level: float = 0.95
) -> tuple[float, float, str]:
    """The interval of a mean and its method: Wilson for 0/1 scores, else the percentile
    bootstrap."""
    if len(values) and is_binary(values):
        low, high = wilson_interval(int(sum(values)), len(values), level)
        return (low, high, "wilson")
    low, high = bootstrap_ci(values, samples, seed, level)
    return (low, high, "bootstrap")


def degenerate(low: float | None, high: float | None) -> bool:
    """An interval that says nothing: missing, not a number, or a single point (a bootstrap
    over scores that never vary; floating-point noise in the last digits still counts)."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return True
    return math.isclose(low, high, rel_tol=1e-9, abs_tol=1e-12)


def paired_difference(
    a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Difference a - b on the same examples with its interval (`interval`: newcombe for 0/1
    scores, with the right/wrong counts and exact McNemar p; bootstrap otherwise)."""
    if len(a) != len(b):
        raise ValueError("paired scores must cover the same examples")
    diff = [x - y for x, y in zip(a, b)]
    found: dict[str, Any] = {
        "n": len(diff),
        "difference": float(np.mean(diff)) if diff else math.nan,
    }
    if diff and is_binary(a, b):
        a_only = sum(1 for x, y in zip(a, b) if x > y)
        b_only = sum(1 for x, y in zip(a, b) if y > x)
        both = sum(1 for x, y in zip(a, b) if x == y == 1.0)
        neither = len(diff) - a_only - b_only - both
        low, high = newcombe_paired_interval(both, a_only, b_only, neither)
        found.update(ci_low=low, ci_high=high, interval="newcombe")
        found.update(a_only_correct=a_only, b_only_correct=b_only, both_correct=both)
        found["mcnemar_p"] = mcnemar_exact(a, b)
        return found
    low, high = bootstrap_ci(diff, samples, seed)
    found.update(ci_low=low, ci_high=high, interval="bootstrap")
    return found


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes."""
    only_a = sum(1 for x, y in zip(a, b) if x >= 0.5 > y)
    only_b = sum(1 for x, y in zip(a, b) if y >= 0.5 > x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


def paired_comparison(
    a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Difference a - b of the headline score on the same examples (`paired_difference`);
    the right/wrong counts and McNemar p are None for graded scores (ROUGE, similarity),
    whose comparison is the interval of the difference."""
    found = paired_difference(a, b, samples, seed)
    for key in ("a_only_correct", "b_only_correct", "mcnemar_p"):
        found.setdefault(key, None)
    return found


def metric_entry(
    values: Sequence[float],
    samples: int,
    seed: int,
    higher_is_better: bool = True,
    percent: bool = False,
) -> dict[str, Any]:
    """One entry of a candidate's `metrics` mapping: mean, 95% interval (`mean_interval`)
    and n.

    `percent` tells the report to show the value as a percentage (a rate in [0, 1]).
    """
    low, high, method = mean_interval(values, samples, seed)
    return {
        "value": float(np.mean(values)) if len(values) else None,
        "ci_low": low,
        "ci_high": high,
        "interval": method,
        "n": len(values),
        "higher_is_better": higher_is_better,
        "percent": percent,
    }


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation; None when it is undefined (fewer than 3 pairs, or a
    constant series)."""
    if len(x) != len(y):
        raise ValueError("spearman needs two series of the same length")
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
