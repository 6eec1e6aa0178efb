"""Golden parser tests: replies of the shapes real models produce, each with the result the
strict parser must give (ok with this answer, no_answer, or malformed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from potstill.config import TaskConfig
from potstill.tasks import KINDS, build_task

HERE = Path(__file__).parent
# The task each golden file is read with; a line's "task" key adds settings (a calculator).
BASE = {
    "classification": {"kind": "classification", "preset": "nli"},
    "multiple_choice": {"kind": "multiple_choice"},
    "math": {"kind": "math"},
    "summarization": {"kind": "summarization"},
    "conversation": {"kind": "conversation"},
}


def _cases() -> list[Any]:
    cases = []
    for kind in KINDS:
        lines = (HERE / f"golden_{kind}.jsonl").read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            case = json.loads(line)
            cases.append(pytest.param(kind, case, id=f"{kind}:{number}:{case['note']}"))
    return cases


def test_every_kind_has_at_least_fifty_golden_replies_of_each_outcome() -> None:
    for kind in KINDS:
        lines = (HERE / f"golden_{kind}.jsonl").read_text(encoding="utf-8").splitlines()
        statuses = {json.loads(line)["status"] for line in lines}
        assert len(lines) >= 50, kind
        assert statuses == {"ok", "no_answer", "malformed"}, kind


@pytest.mark.parametrize(("kind", "case"), _cases())
def test_golden_reply(kind: str, case: dict[str, Any]) -> None:
    task = build_task(TaskConfig(**{**BASE[kind], **case.get("task", {})}))
    parsed = task.parse(case["reply"], case["style"], case.get("inputs"))
    assert parsed.status == case["status"], parsed.detail
    if case["status"] == "ok":
        assert parsed.answer == case["answer"]
    else:
        assert parsed.answer is None
