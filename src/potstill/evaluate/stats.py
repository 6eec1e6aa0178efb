"""The statistics of potstill, in one place: intervals, paired tests, correlations and
agreement, for evaluate (`metrics`, `stage`, `judgments`), grade (`summary`) and report.

Intervals. One rule for every interval of a mean (`mean_interval`): a rate of right/wrong
(0/1) scores gets the Wilson score interval, and a paired difference of two such rates
Newcombe's hybrid score interval for paired data (both stay informative at 0% and 100%,
where the percentile bootstrap collapses to a point); every other score (ROUGE, similarity,
judge and human scores) keeps the percentile bootstrap. Each entry names its method in
`interval`. Two resamplers share one percentile step (`percentile_interval`): `bootstrap_ci`
for a mean of per-example values (vectorized, the figures of scores.json), `bootstrap_units`
for any statistic of whole units (a grading answer's ratings, judge-human pairs).

Missing data. A figure that is undefined (no values, fewer pairs than it needs, no variation
to correlate or agree on) is None, never NaN: a statistic returns `float | None`, an interval
`(None, None)`, and a mean-with-interval entry has `value` None. None is JSON's null (NaN is
not JSON), every formatter writes it as "n/a", and `is None` is the one test. NaN stays inside
a computation only (a resample whose statistic is undefined is skipped, not counted).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from statistics import NormalDist
from typing import Any, Literal, TypeVar

import numpy as np

Interval = tuple[float, float] | tuple[None, None]
NO_INTERVAL: Interval = (None, None)
Level = Literal["nominal", "ordinal", "interval"]
T = TypeVar("T")


def percentile_interval(draws: Sequence[float], level: float = 0.95) -> Interval:
    """The percentile interval of resampled statistics; (None, None) without a draw."""
    if not len(draws):
        return NO_INTERVAL
    tail = (1 - level) / 2
    return (float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)))


def bootstrap_ci(
    scores: Sequence[float], samples: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Percentile bootstrap interval of the mean of per-example values."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return NO_INTERVAL
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(samples, values.size))
    means = values[idx].mean(axis=1)
    return percentile_interval(means, level)


def bootstrap_units(
    units: Sequence[T],
    statistic: Callable[[Sequence[T]], float | None],
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile interval of a statistic over units resampled with replacement (the
    grading items, not the single ratings, are the independent draws); a resample whose
    statistic is undefined is skipped."""
    if not units:
        return NO_INTERVAL
    rng = random.Random(seed)
    found = []
    for _ in range(samples):
        value = statistic([units[rng.randrange(len(units))] for _ in units])
        if value is not None:
            found.append(value)
    return percentile_interval(found, level)


def is_binary(*series: Sequence[float]) -> bool:
    """Whether every value is 0 or 1 (right or wrong), so a rate's score intervals apply."""
    return all(x in (0.0, 1.0) for values in series for x in values)


def _z(level: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - level) / 2)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval of a proportion: never empty at 0 or n successes, and within
    [0, 1]; (None, None) when n is 0."""
    if n == 0:
        return NO_INTERVAL
    return _wilson(successes, n, level)


def _wilson(successes: int, n: int, level: float) -> tuple[float, float]:
    z, p = _z(level), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def newcombe_paired_interval(
    both: int, a_only: int, b_only: int, neither: int, level: float = 0.95
) -> Interval:
    """Newcombe's hybrid score interval (1998, method 10) for rate(a) - rate(b) on the same
    examples, from the 2x2 table of right/wrong pairs: the Wilson intervals of both rates,
    combined with their correlation (continuity-corrected phi, 0 when a margin is empty).
    It never collapses to a point; (None, None) when there is no pair."""
    n = both + a_only + b_only + neither
    if n == 0:
        return NO_INTERVAL
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = _wilson(both + a_only, n, level)
    l2, u2 = _wilson(both + b_only, n, level)
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
) -> tuple[float | None, float | None, str]:
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
        "difference": float(np.mean(diff)) if diff else None,
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


# -- agreement: checked in tests/grade/test_agreement.py against published worked examples
# (Krippendorff 2011; Cohen 1960), so potstill needs no statistics package.


def cohen_kappa(
    a: Sequence[Hashable], b: Sequence[Hashable], weights: Literal["quadratic"] | None = None
) -> float | None:
    """Cohen's kappa of two raters on the same units; quadratic weights need numeric
    ratings. None when the ratings show no variation at all (chance agreement is 1)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same units")
    categories = sorted(set(a) | set(b), key=lambda c: (str(type(c)), c))
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    if not a or k < 2:
        return None
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[index[x], index[y]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    if weights == "quadratic":
        values = np.asarray(categories, dtype=float)
        span = values.max() - values.min()
        weight = (values[:, None] - values[None, :]) ** 2 / span**2
    else:
        weight = 1.0 - np.eye(k)
    chance = float((weight * expected).sum())
    if chance == 0:
        return None
    return float(1.0 - (weight * observed).sum() / chance)


def krippendorff_alpha(
    units: Sequence[Sequence[Hashable]], level: Level = "nominal"
) -> float | None:
    """Krippendorff's alpha for any number of raters with missing ratings: `units` holds,
    per unit, the ratings it got. Units with fewer than two ratings are not pairable and
    are left out. None when there is no variation to agree on."""
    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u}, key=lambda c: (str(type(c)), c))
    if len(values) < 2:
        return None
    index = {v: i for i, v in enumerate(values)}
    k = len(values)
    coincidence = np.zeros((k, k))
    for unit in pairable:
        counts = np.zeros(k)
        for v in unit:
            counts[index[v]] += 1
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    totals = coincidence.sum(axis=1)
    n = totals.sum()
    delta = _distances(values, totals, level)
    observed = (coincidence * delta).sum() / n
    expected = (np.outer(totals, totals) * delta).sum() / (n * (n - 1))
    if expected == 0:
        return None
    return float(1.0 - observed / expected)


def _distances(values: list[Hashable], totals: np.ndarray, level: Level) -> np.ndarray:
    k = len(values)
    if level == "nominal":
        return 1.0 - np.eye(k)
    if level == "interval":
        v = np.asarray(values, dtype=float)
        squared: np.ndarray = (v[:, None] - v[None, :]) ** 2
        return squared
    cumulative = np.cumsum(totals)
    delta = np.zeros((k, k))
    for c in range(k):
        for d in range(c, k):
            between = cumulative[d] - (cumulative[c - 1] if c else 0.0)
            delta[c, d] = delta[d, c] = (between - (totals[c] + totals[d]) / 2) ** 2
    return delta
