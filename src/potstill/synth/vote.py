"""Self-consistency: the majority answer over several teacher samples, and which sample's
reply (with its rationale) becomes the training row."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from statistics import median

from potstill.tasks import Parsed


@dataclass(frozen=True)
class Vote:
    answer: str | None  # the majority answer; None when no sample parsed
    votes: dict[str, int]  # answer -> samples that gave it
    chosen: int  # the sample whose reply stands for the input


def majority_vote(samples: list[Parsed], finishes: list[str]) -> Vote:
    """Plurality over the samples that parsed; a tie goes to the answer seen first.

    The chosen sample agrees with the vote, finished with `stop` and has a rationale when
    one does; among those, the rationale whose length is nearest the median of theirs
    (neither the terse nor the rambling one), the earliest on a tie. When no sample parsed,
    sample 0 stands for the input (its failure is the row's rejection reason).
    """
    answers = [p.answer for p in samples if p.ok and p.answer is not None]
    if not answers:
        return Vote(None, {}, 0)
    counts = Counter(answers)
    first_seen = {a: answers.index(a) for a in counts}
    winner = min(counts, key=lambda a: (-counts[a], first_seen[a]))
    agreeing = [i for i, p in enumerate(samples) if p.ok and p.answer == winner]
    complete = [i for i in agreeing if finishes[i] == "stop"] or agreeing
    reasoned = [i for i in complete if samples[i].rationale] or complete
    lengths = {i: len(samples[i].rationale or "") for i in reasoned}
    middle = median(lengths.values())
    chosen = min(reasoned, key=lambda i: (abs(lengths[i] - middle), i))
    return Vote(winner, dict(counts), chosen)
