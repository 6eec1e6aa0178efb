"""Which test examples humans grade, and which grader sees which of them.

The sample is seeded and stratified, so a small round still covers every label (or every
pattern of right and wrong answers); a prefix of it, the overlap, goes to every grader so
that agreement between graders can be measured.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

# Kinds whose references come from a small label set: stratify by the label itself.
LABELLED_KINDS = frozenset({"classification", "multiple_choice"})


def strata(
    kind: str,
    ids: Sequence[str],
    references: Mapping[str, str | None],
    predictions: Mapping[str, Mapping[str, dict[str, Any]]],
) -> dict[str, str]:
    """Each example's stratum: its reference label for labelled kinds, else which candidates
    the ground truth scored right (e.g. "teacher:1 student:0"), or "no reference"."""
    found: dict[str, str] = {}
    for example_id in ids:
        reference = references.get(example_id)
        if reference is None:
            found[example_id] = "no reference"
        elif kind in LABELLED_KINDS:
            found[example_id] = f"label={reference.strip().lower()}"
        else:
            outcome = []
            for name, rows in sorted(predictions.items()):
                score = rows.get(example_id, {}).get("score")
                outcome.append(f"{name}:{'-' if score is None else round(float(score))}")
            found[example_id] = " ".join(outcome)
    return found


def stratified_sample(groups: Mapping[str, str], size: int, rng: random.Random) -> list[str]:
    """`size` ids drawn without replacement, each stratum in proportion to its share
    (largest remainder), then shuffled."""
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for example_id in sorted(groups):
        by_stratum[groups[example_id]].append(example_id)
    total = len(groups)
    size = min(size, total)
    if size == 0:
        return []
    names = sorted(by_stratum)
    quotas = {s: size * len(by_stratum[s]) / total for s in names}
    counts = {s: int(quotas[s]) for s in names}
    by_remainder = sorted(names, key=lambda s: (-(quotas[s] - counts[s]), rng.random()))
    for stratum in by_remainder[: size - sum(counts.values())]:
        counts[stratum] += 1
    chosen: list[str] = []
    for stratum in names:
        chosen.extend(rng.sample(by_stratum[stratum], counts[stratum]))
    rng.shuffle(chosen)
    return chosen


def draw_sample(groups: Mapping[str, str], size: int, overlap: int, seed: int) -> list[str]:
    """The graded examples in order: first a stratified overlap set, then a stratified
    draw of the rest. Any grader's share starts with the overlap."""
    rng = random.Random(seed)
    shared = stratified_sample(groups, min(overlap, size), rng)
    taken = set(shared)
    rest = {i: s for i, s in groups.items() if i not in taken}
    return shared + stratified_sample(rest, size - len(shared), rng)


def assign(
    sample: Sequence[str],
    overlap: int,
    per_grader: int | None,
    load: Mapping[str, int],
    seed: int,
    grader: str,
) -> list[str]:
    """The examples a new grader gets: all of the overlap, then the other examples with the
    fewest graders so far (ties broken by a seeded order) up to `per_grader`."""
    shared = list(sample[:overlap])
    rest = list(sample[overlap:])
    if per_grader is None or per_grader >= len(sample):
        return shared + rest
    rng = random.Random(f"{seed}:{grader}")
    tiebreak = {example_id: rng.random() for example_id in rest}
    rest.sort(key=lambda i: (load.get(i, 0), tiebreak[i]))
    return shared + rest[: max(0, per_grader - len(shared))]
