"""Agreement statistics: Cohen's kappa, Krippendorff's alpha, rank correlation, and the
adapter that reads the LLM judge's verdicts for judge-human agreement.

The coefficients are a few lines of numpy each, checked in the tests against published
worked examples (Krippendorff 2011; Cohen 1960), so potstill needs no statistics package.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from potstill.runs import RunFolder, read_jsonl

Level = Literal["nominal", "ordinal", "interval"]
T = TypeVar("T")


def cohen_kappa(
    a: Sequence[Hashable], b: Sequence[Hashable], weights: Literal["quadratic"] | None = None
) -> float:
    """Cohen's kappa of two raters on the same units; quadratic weights need numeric
    ratings. NaN when the ratings show no variation at all (chance agreement is 1)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same units")
    categories = sorted(set(a) | set(b), key=lambda c: (str(type(c)), c))
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    if not a or k < 2:
        return math.nan
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
        return math.nan
    return float(1.0 - (weight * observed).sum() / chance)


def krippendorff_alpha(units: Sequence[Sequence[Hashable]], level: Level = "nominal") -> float:
    """Krippendorff's alpha for any number of raters with missing ratings: `units` holds,
    per unit, the ratings it got. Units with fewer than two ratings are not pairable and
    are left out. NaN when there is no variation to agree on."""
    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u}, key=lambda c: (str(type(c)), c))
    if len(values) < 2:
        return math.nan
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
        return math.nan
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


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank); NaN without variation."""
    if len(x) != len(y) or len(x) < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def bootstrap_units(
    units: Sequence[T],
    statistic: Callable[[Sequence[T]], float],
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of a statistic over units resampled with replacement (the
    grading items, not the single ratings, are the independent draws)."""
    if not units:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    found = []
    for _ in range(samples):
        value = statistic([units[rng.randrange(len(units))] for _ in units])
        if not math.isnan(value):
            found.append(value)
    if not found:
        return (math.nan, math.nan)
    tail = (1 - level) / 2
    return (float(np.quantile(found, tail)), float(np.quantile(found, 1 - tail)))


@dataclass
class JudgeVerdicts:
    """The LLM judge's verdicts, keyed by (example id, candidate)."""

    pointwise: dict[tuple[str, str], float] = field(default_factory=dict)
    pairwise: dict[tuple[str, str], str] = field(default_factory=dict)
    opponent: str = "teacher"


def load_judge_verdicts(run: RunFolder) -> JudgeVerdicts | None:
    """The LLM judge's verdicts from eval/judge/, or None when the run has none.

    The evaluate stage writes one file per candidate, `eval/judge/<candidate>.jsonl`, one
    object per judged example: `{"id": str, "pointwise": {"score": int | None, ...},
    "pairwise": {"vs": str, "outcome": "win" | "tie" | "loss" | None, ...}}` (either part
    may be missing). The score is the judge's overall rubric score (compared with the humans
    by rank); the outcome is the candidate's result against `vs` after asking in both orders
    (a verdict that flips is a tie). Entries without a score or outcome (a judge reply that
    could not be read) are skipped.
    """
    folder = run.eval_dir / "judge"
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not paths:
        return None
    found = JudgeVerdicts()
    for path in paths:
        candidate = path.stem
        for row in read_jsonl(path):
            key = (str(row["id"]), candidate)
            point = row.get("pointwise") or {}
            if point.get("score") is not None:
                found.pointwise[key] = float(point["score"])
            pair = row.get("pairwise") or {}
            if pair.get("outcome") in ("win", "tie", "loss"):
                found.pairwise[key] = str(pair["outcome"])
                found.opponent = str(pair.get("vs", "teacher"))
    return found
