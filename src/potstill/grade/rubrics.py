"""The human rubric per task kind: criteria a grader scores on a 1-5 scale.

Kept as data so the LLM judge and the human pages can share one definition later.
"""

from __future__ import annotations

from dataclasses import dataclass

LOW, HIGH = 1, 5


@dataclass(frozen=True)
class Criterion:
    """One rubric line: a short name (a form field), what it asks, and its scale."""

    name: str
    description: str
    low: int = LOW
    high: int = HIGH


CORRECTNESS = Criterion(
    "correctness", "Is the answer right? 5: fully right; 3: partly right; 1: wrong."
)
REASONING = Criterion(
    "reasoning",
    "Does the explanation, if any, support the answer? 5: sound; 1: wrong or missing.",
)
FORMAT = Criterion(
    "format", "Is the reply in the asked format and free of clutter? 5: clean; 1: unusable."
)
CONCISENESS = Criterion(
    "conciseness", "Is it as short as it can be while complete? 5: tight; 1: rambling."
)

RUBRICS: dict[str, list[Criterion]] = {
    "math": [CORRECTNESS, REASONING, FORMAT],
    "classification": [CORRECTNESS, FORMAT],
    "multiple_choice": [CORRECTNESS, REASONING, FORMAT],
    "summarization": [
        Criterion(
            "faithfulness",
            "Does every statement follow from the source? 5: all; 1: invents facts.",
        ),
        Criterion("coverage", "Does it keep the source's main points? 5: all; 1: none."),
        CONCISENESS,
        Criterion("fluency", "Is it clear, well-formed prose? 5: clear; 1: hard to read."),
    ],
    "conversation": [
        Criterion("helpfulness", "Does it do what the user asked? 5: fully; 1: not at all."),
        CORRECTNESS,
        CONCISENESS,
    ],
}

GENERIC: list[Criterion] = [CORRECTNESS, CONCISENESS, FORMAT]


def rubric_for(kind: str) -> list[Criterion]:
    """The criteria graders score for a task kind; a generic rubric for unknown kinds."""
    return list(RUBRICS.get(kind, GENERIC))
