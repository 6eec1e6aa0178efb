"""Ground-truth metrics of one candidate, as the task defines them, each with an interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from potstill.evaluate.stats import metric_entry, percentile_interval
from potstill.tasks import Example, Parsed, Task


@dataclass(frozen=True)
class CandidateScores:
    """Per-example metric values (the `scores` of each prediction row), the metrics mapping of
    scores.json (value, interval, n, direction), and non-scalar details such as a confusion."""

    per_example: list[dict[str, float]]
    metrics: dict[str, dict[str, Any]]
    details: dict[str, Any]


def corpus_interval(
    task: Task,
    parsed: Sequence[Parsed],
    examples: Sequence[Example],
    samples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, tuple[float, float | None, float | None]]:
    """Each corpus metric (macro-F1) with a percentile bootstrap interval over examples (a
    resample where the metric is undefined is skipped)."""
    value = task.corpus_scores(parsed, examples)
    if not value or not examples:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in value}
    for _ in range(samples):
        pick = rng.integers(0, len(examples), size=len(examples))
        again = task.corpus_scores([parsed[i] for i in pick], [examples[i] for i in pick])
        for name in value:
            draws[name].append(again[name])
    return {
        name: (
            value[name],
            *percentile_interval([d for d in draws[name] if not math.isnan(d)], level),
        )
        for name in value
    }


def score_candidate(
    task: Task, parsed: Sequence[Parsed], examples: Sequence[Example], samples: int, seed: int
) -> CandidateScores:
    """Every metric of the task for one candidate's parsed replies on the test examples,
    each with its 95% interval (`stats.mean_interval`; corpus metrics by bootstrap).

    A metric with no example to measure (no references at all) is left out, never zero.
    """
    per_example = task.example_scores(parsed, examples)
    referenced = [i for i, e in enumerate(examples) if e.reference is not None]
    corpus = corpus_interval(
        task, [parsed[i] for i in referenced], [examples[i] for i in referenced], samples, seed
    )
    metrics: dict[str, dict[str, Any]] = {}
    for metric in task.metrics:
        if metric.corpus:
            if metric.name not in corpus or math.isnan(corpus[metric.name][0]):
                continue
            value, low, high = corpus[metric.name]
            metrics[metric.name] = {
                "value": value,
                "ci_low": low,
                "ci_high": high,
                "n": len(referenced),
                "interval": "bootstrap",
                "higher_is_better": metric.higher_is_better,
            }
            continue
        values = [s[metric.name] for s in per_example if metric.name in s]
        if values:
            metrics[metric.name] = metric_entry(values, samples, seed, metric.higher_is_better)
    details = task.details(parsed, examples) if referenced else {}
    return CandidateScores(per_example, metrics, details)


def headline(task: Task, scores: dict[str, float]) -> float | None:
    """The headline (first) metric of one example, or None where it does not apply."""
    return scores.get(task.metrics[0].name)
