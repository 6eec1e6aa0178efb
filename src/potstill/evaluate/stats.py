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
