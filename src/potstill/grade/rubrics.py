"""The human rubric per task kind: the criteria a grader scores on a 1-5 scale.

They are the LLM judge's criteria (evaluate/rubrics.yaml, or `judge.rubric` from the run's
config), so humans and the judge grade the same things and their figures can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from potstill.config import Rubric
from potstill.evaluate.rubrics import rubric_for as judge_rubric_for

LOW, HIGH = 1, 5


@dataclass(frozen=True)
class Criterion:
    """One rubric line: a short name (a form field), what it asks, and its scale."""

    name: str
    description: str
    low: int = LOW
    high: int = HIGH


def rubric_for(kind: str, override: Rubric | None = None) -> list[Criterion]:
    """The criteria graders score for a task kind: the judge's, with its generic fallback
    for a kind without its own rubric. (The judge gives one score per answer on the rubric's
    scale; a grader scores each criterion, so each line says what its ends mean.)"""
    _, rubric = judge_rubric_for(kind, override)
    ends = f" {HIGH}: fully; {LOW}: not at all."
    return [Criterion(c.name, c.description + ends) for c in rubric.criteria]
