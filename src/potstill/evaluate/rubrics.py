"""The rubrics, for the LLM judge and the human graders alike: data in rubrics.yaml, one per
task kind, with a generic fallback, or `judge.rubric` from the config. Humans score the
judge's criteria, so their figures and the judge's cover the same things."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from potstill.config import Criterion, Rubric

RUBRICS_FILE = Path(__file__).with_name("rubrics.yaml")
GENERIC = "generic"
# Every rubric's scale: the judge's one score per answer and a grader's score per criterion.
LOW, HIGH = 1, 5


@cache
def builtin_rubrics() -> dict[str, Rubric]:
    """Every built-in rubric by task kind (and `generic`), validated."""
    tree = yaml.safe_load(RUBRICS_FILE.read_text(encoding="utf-8"))
    return {kind: Rubric.model_validate(body) for kind, body in tree.items()}


def rubric_for(kind: str, override: Rubric | None = None) -> tuple[str, Rubric]:
    """The rubric the judge uses for a task kind, and a name for it in the report."""
    if override is not None:
        return "from the config (judge.rubric)", override
    rubrics = builtin_rubrics()
    if kind in rubrics:
        return kind, rubrics[kind]
    return GENERIC, rubrics[GENERIC]


def graded_criteria(kind: str, override: Rubric | None = None) -> list[Criterion]:
    """The criteria a human grader scores, each from LOW to HIGH: the judge's (`rubric_for`).
    The judge gives one score per answer on the rubric's scale; a grader scores each
    criterion, so each line says what its ends mean."""
    _, rubric = rubric_for(kind, override)
    ends = f" {HIGH}: fully; {LOW}: not at all."
    return [Criterion(name=c.name, description=c.description + ends) for c in rubric.criteria]
