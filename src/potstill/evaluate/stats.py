"""Confidence intervals and paired comparisons for per-example scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    """Difference a - b on the same examples: mean, bootstrap interval, McNemar p (0/1)."""
    if len(a) != len(b):
        raise ValueError("paired scores must cover the same examples")
    diff = [x - y for x, y in zip(a, b)]
    low, high = bootstrap_ci(diff, samples, seed)
    # McNemar's test and the right/wrong counts are for 0/1 scores (accuracy), not for
    # graded ones (ROUGE, similarity), whose comparison is the interval of the difference.
    binary = all(x in (0.0, 1.0) for x in (*a, *b))
    return {
        "n": len(diff),
        "difference": float(np.mean(diff)) if diff else math.nan,
        "ci_low": low,
        "ci_high": high,
        "a_only_correct": sum(1 for x, y in zip(a, b) if x >= 0.5 > y) if binary else None,
        "b_only_correct": sum(1 for x, y in zip(a, b) if y >= 0.5 > x) if binary else None,
        "mcnemar_p": mcnemar_exact(a, b) if binary else None,
    }


def metric_entry(
    values: Sequence[float],
    samples: int,
    seed: int,
    higher_is_better: bool = True,
    percent: bool = False,
) -> dict[str, Any]:
    """One entry of a candidate's `metrics` mapping: mean, 95% bootstrap interval and n.

    `percent` tells the report to show the value as a percentage (a rate in [0, 1]).
    """
    low, high = bootstrap_ci(values, samples, seed)
    return {
        "value": float(np.mean(values)) if len(values) else None,
        "ci_low": low,
        "ci_high": high,
        "n": len(values),
        "higher_is_better": higher_is_better,
        "percent": percent,
    }


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Difference a - b of a continuous score on the same examples, with a bootstrap interval."""
    if len(a) != len(b):
        raise ValueError("paired scores must cover the same examples")
    diff = [x - y for x, y in zip(a, b)]
    low, high = bootstrap_ci(diff, samples, seed)
    return {
        "n": len(diff),
        "difference": float(np.mean(diff)) if diff else math.nan,
        "ci_low": low,
        "ci_high": high,
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
