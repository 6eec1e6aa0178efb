"""The judge's rubrics: data in rubrics.yaml, one per task kind, with a generic fallback."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from potstill.config import Rubric

RUBRICS_FILE = Path(__file__).with_name("rubrics.yaml")
GENERIC = "generic"


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
