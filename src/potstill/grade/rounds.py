"""A grading round: a run's test examples and predictions, its sample and its graders.

The first call draws the sample and pins it in grades.sqlite; later calls (the web app, a new
grader, `--summary`) read the same sample even if the config has changed since.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from potstill.config import Criterion, GradeConfig, Rubric, RunConfig
from potstill.data.loading import read_examples
from potstill.errors import UserError
from potstill.evaluate.rubrics import graded_criteria
from potstill.grade.sampling import assign, draw_sample, strata
from potstill.grade.store import GradeStore, GradingTask
from potstill.records import Prediction, Scores, read_record, read_records
from potstill.runs import RunFolder
from potstill.tasks import Example

MODE_ORDER = ("pointwise", "pairwise")


class GradeError(UserError, ValueError):
    """A grading round that cannot start; the message says what to do."""


def grades_path(run: RunFolder) -> Path:
    return run.root / "grades.sqlite"


def evaluation_order(run: RunFolder) -> list[str]:
    """Candidates in the order the evaluation lists them (teacher, base, students)."""
    scores = run.eval_dir / "scores.json"
    if not scores.exists():
        return []
    return read_record(scores, Scores).order


def candidate_names(run: RunFolder, wanted: list[str] | None) -> list[str]:
    """Candidates with predictions, in evaluation order (scores.json), or those named."""
    folder = run.eval_dir / "predictions"
    present = sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []
    if not present:
        raise GradeError(f"{folder}: no predictions; run `potstill evaluate {run.root}` first")
    order = evaluation_order(run)
    ranked = [n for n in order if n in present] + [n for n in present if n not in order]
    if wanted is None:
        return ranked
    missing = [n for n in wanted if n not in present]
    if missing:
        raise GradeError(f"grade.candidates: no predictions for {missing}; found {ranked}")
    return list(wanted)


def _settings(config: GradeConfig, names: list[str]) -> str:
    dumped = config.model_dump(mode="json")
    return json.dumps({**dumped, "candidates": names}, sort_keys=True)


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


@dataclass
class GradingRound:
    run: RunFolder
    config: GradeConfig
    kind: str
    store: GradeStore
    examples: dict[str, Example]
    predictions: dict[str, dict[str, dict[str, Any]]]
    notes: list[str] = field(default_factory=list)
    judge_rubric: Rubric | None = None

    @property
    def rubric(self) -> list[Criterion]:
        return graded_criteria(self.kind, self.judge_rubric)

    def add_grader(self, name: str) -> tuple[str, bool]:
        """A personal token for a new grader (their share of the sample assigned now), or a
        new token for an existing one. Returns (token, created)."""
        if not name.strip() or len(name) > 80:
            raise GradeError("a grader's name must be 1-80 characters")
        examples = assign(
            self.store.sample(),
            self.config.overlap,
            self.config.items_per_grader,
            self.store.assignment_load(),
            self.config.seed,
            name,
        )
        return self.store.add_grader(name.strip(), examples)

    def ordered_tasks(self, grader_id: int) -> list[GradingTask]:
        """A grader's tasks in their own seeded random order, pointwise pages first."""
        return sorted(
            self.store.assigned_tasks(grader_id),
            key=lambda t: (
                MODE_ORDER.index(t.mode),
                _digest(self.config.seed, grader_id, t.task_id),
            ),
        )

    def shown_left(self, grader_id: int, task: GradingTask) -> str | None:
        """Which candidate a grader sees on the left of a pairwise page, stable across
        reloads. Sides alternate along the grader's own page order from a seeded start, so
        each candidate is shown first on half of a grader's pairwise pages (a random coin per
        page could leave a short round all on one side)."""
        if task.mode != "pairwise":
            return None
        pairwise = [t.task_id for t in self.ordered_tasks(grader_id) if t.mode == "pairwise"]
        position = pairwise.index(task.task_id) if task.task_id in pairwise else 0
        start = _digest(self.config.seed, grader_id, "side") % 2
        return task.candidate if (position + start) % 2 else task.opponent

    def reply(self, candidate: str, example_id: str) -> str:
        row = self.predictions[candidate][example_id]
        if row.get("reply") is None:
            return f"(no reply: {row.get('error') or 'the call failed'})"
        return str(row["reply"])


def _load_predictions(run: RunFolder, names: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    folder = run.eval_dir / "predictions"
    return {
        n: {r.id: r.as_written() for r in read_records(folder / f"{n}.jsonl", Prediction)}
        for n in names
    }


def _tasks(
    ids: list[str], names: list[str], config: GradeConfig
) -> list[tuple[str, str, str, str | None]]:
    found: list[tuple[str, str, str, str | None]] = []
    for example_id in ids:
        if "pointwise" in config.modes:
            found.extend(("pointwise", example_id, n, None) for n in names)
        if "pairwise" in config.modes:
            others = [n for n in names if n != config.reference]
            found.extend(("pairwise", example_id, n, config.reference) for n in others)
    return found


def open_round(run: RunFolder, config: RunConfig) -> GradingRound:
    """Load the run's test split and predictions; draw and pin the sample on first use."""
    grade = config.grade
    names = candidate_names(run, grade.candidates)
    if "pairwise" in grade.modes and grade.reference not in names:
        raise GradeError(
            f"grade.reference: {grade.reference!r} has no predictions; pick one of {names} "
            "or set grade.modes to [pointwise]"
        )
    if "pairwise" in grade.modes and len(names) < 2:
        raise GradeError("pairwise grading needs at least two candidates")
    test_path = run.data_dir / "test.jsonl"
    if not test_path.exists():
        raise GradeError(f"{test_path}: no test split; run `potstill run CONFIG` first")
    examples = {e.id: e for e in read_examples(test_path)}
    predictions = _load_predictions(run, names)
    store = GradeStore(grades_path(run))
    found = GradingRound(
        run, grade, config.task.kind, store, examples, predictions, judge_rubric=config.judge.rubric
    )
    settings = _settings(grade, names)
    if not store.sample():
        gradable = [i for i in examples if all(i in predictions[n] for n in names)]
        if not gradable:
            raise GradeError("no test example has a prediction from every graded candidate")
        references = {i: examples[i].reference for i in gradable}
        groups = strata(config.task.kind, gradable, references, predictions)
        order = draw_sample(groups, grade.size, grade.overlap, grade.seed)
        store.save_sample([(i, groups[i]) for i in order], _tasks(order, names, grade), settings)
    elif (pinned := store.meta("sample_settings")) != settings and pinned:
        # New graders are assigned by the settings the sample was drawn with.
        kept = json.loads(pinned)
        names = kept.pop("candidates")
        found.config = GradeConfig.model_validate(kept)
        found.predictions = _load_predictions(run, names)
        found.notes.append(
            "grades.sqlite keeps the sample drawn with earlier grade settings "
            f"({pinned}); a new sample needs a new grades.sqlite"
        )
    return found
