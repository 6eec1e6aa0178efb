"""Each student's training rows: the synth default, the teacher's replies under the student's
own settings, or the dataset's gold references (the method's comparison)."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from potstill.config import RunConfig, StudentConfig
from potstill.data.loading import read_examples
from potstill.records import TeacherRow, read_records, read_training_rows
from potstill.runs import RunFolder
from potstill.synth.filters import SETTING_REASONS
from potstill.synth.stage import accepted_row, training_row
from potstill.tasks import Example, Parsed, Task


@dataclass
class StudentRows:
    """A student's training rows, where they came from, and what was left out and why."""

    rows: list[dict[str, Any]]
    source: str
    target: str
    require_reference_match: bool | None
    skipped: Counter[str] = field(default_factory=Counter)

    def digest(self) -> str:
        text = json.dumps(self.rows, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "require_reference_match": self.require_reference_match,
            "rows": len(self.rows),
            "skipped": dict(self.skipped),
        }


def _variant_config(config: RunConfig, target: str, require_match: bool) -> RunConfig:
    synth = config.synth.model_copy(
        update={"target": target, "require_reference_match": require_match}
    )
    return config.model_copy(update={"synth": synth})


def teacher_rows(
    records: list[TeacherRow], task: Task, config: RunConfig, target: str, require_match: bool
) -> StudentRows:
    """Rows from synth/teacher.jsonl under a student's own target and reference check."""
    variant = _variant_config(config, target, require_match)
    found = StudentRows([], "teacher", target, require_match)
    for record in records:
        recorded = record.rejected
        if recorded and recorded not in SETTING_REASONS:
            found.skipped[recorded] += 1
            continue
        # A failed or unasked input was skipped above: the reply was parsed, its status is one
        # of Parsed's.
        status = cast(Any, record.status)
        parsed = Parsed(status, record.answer, record.rationale, record.raw_answer)
        example = Example(record.id, dict(record.inputs), record.reference)
        row, reason = accepted_row(task, variant, example, parsed, str(record.finish_reason))
        if row is None:
            found.skipped[str(reason)] += 1
            continue
        row["rationale"] = parsed.rationale if target == "rationale_answer" else None
        found.rows.append(row)
    return found


def gold_rows(examples: list[Example], task: Task, config: RunConfig) -> StudentRows:
    """Rows whose reply is the dataset's reference, rendered as the answer alone (no rationale)."""
    variant = _variant_config(config, "answer", False)
    found = StudentRows([], "gold", "answer", None)
    for example in examples:
        if example.reference is None:
            found.skipped["no_reference"] += 1
            continue
        if task.check_reference(example.reference) is not None:
            found.skipped["unusable_reference"] += 1
            continue
        parsed = Parsed("ok", example.reference, None, example.reference)
        row = training_row(task, variant, example, parsed)
        row["rationale"] = None
        found.rows.append(row)
    return found


def student_rows(
    run: RunFolder, config: RunConfig, task: Task, student: StudentConfig
) -> StudentRows:
    """The rows `student` trains on, per its `data` setting."""
    data = student.data
    if data is None:
        rows = read_training_rows(run.synth_dir / "train.jsonl")
        return StudentRows(rows, "synth", config.synth.target, config.synth.require_reference_match)
    if data.source == "gold":
        examples = read_examples(run.data_dir / "train.jsonl")
        return gold_rows(examples, task, config)
    target = data.target or config.synth.target
    require_match = (
        config.synth.require_reference_match
        if data.require_reference_match is None
        else data.require_reference_match
    )
    records = read_records(run.synth_dir / "teacher.jsonl", TeacherRow)
    return teacher_rows(records, task, config, target, require_match)


def split_dev(
    rows: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded (train, dev) split of the rows; dev holds at least one row when fraction > 0
    and two or more rows exist."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(fraction * len(rows)))
    dev_index = set(order[:n_dev])
    train = [r for i, r in enumerate(rows) if i not in dev_index]
    dev = [r for i, r in enumerate(rows) if i in dev_index]
    return train, dev
