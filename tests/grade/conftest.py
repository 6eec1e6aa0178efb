"""A small finished run built from files: a test split, predictions and scores, no model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from run_records import synth_summary

from potstill.config import parse_config
from potstill.evaluate.stage import summarize, write_predictions
from potstill.evaluate.stats import paired_comparison
from potstill.files import write_jsonl
from potstill.records import Scores, write_record
from potstill.runs import RunFolder

LABELS = ("positive", "negative")
TEXTS = [
    "The soup was warm and the staff were kind.",
    "Cold fries, rude waiter, never again.",
    "A quiet place with the best bread in town.",
    "We waited an hour and the order was wrong.",
    "Lovely garden seats and fair prices.",
    "The fish smelled off and the bill was huge.",
    "Friendly owner, fresh pasta, will return.",
    "Noisy, cramped and the coffee was burnt.",
    "Great cakes; the children loved the playroom.",
    "Stale bread and a sticky table.",
    "Fast service and a generous lunch menu.",
    "The music was far too loud to talk.",
]
# Which examples each candidate gets right (the rest get the other label).
RIGHT = {
    "teacher": {0, 1, 2, 3, 4, 5, 6, 7, 8, 10},
    "base_student": {0, 2, 3, 6, 9},
    "distilled": {0, 1, 2, 4, 5, 6, 8, 9, 11},
}


def _reply(candidate: str, i: int, reference: str) -> str:
    label = reference if i in RIGHT[candidate] else next(x for x in LABELS if x != reference)
    if candidate == "teacher":
        return f'{{"reason": "The review sounds {label}.", "answer": "{label}"}}'
    if candidate == "base_student":
        return f"I think the label is {label}, because of the tone of the words used here."
    return label


RUBRIC = {
    "criteria": [
        {"name": "correctness", "description": "The label is the right one for the text."},
        {"name": "format", "description": "The reply is one of the labels and nothing else."},
    ],
    "scale": {1: "wrong", 3: "right with clutter", 5: "right and clean"},
}


def build_run(root: Path, grade: dict[str, Any] | None = None) -> RunFolder:
    """Write a run folder as `potstill run` leaves it after evaluate (and synth's summary)."""
    run = RunFolder(root)
    tree = {
        "name": "grading-demo",
        "task": {"kind": "classification", "labels": list(LABELS)},
        "dataset": {"path": str(root / "reviews.jsonl"), "test_size": len(TEXTS)},
        "students": [{"name": "distilled"}],
        "evaluate": {"bootstrap_samples": 200},
        # Two criteria keep the pages short; the judge's rubric from the config is the one
        # humans score (the built-in classification rubric has three).
        "judge": {"rubric": RUBRIC},
        "grade": grade or {},
    }
    config = parse_config(tree, "test")
    root.mkdir(parents=True, exist_ok=True)
    run.config_path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    examples = [
        {"id": f"r{i:02d}", "inputs": {"text": t}, "reference": LABELS[i % 2]}
        for i, t in enumerate(TEXTS)
    ]
    write_jsonl(run.data_dir / "test.jsonl", examples)
    results: dict[str, Any] = {"candidates": {}, "comparisons": [], "order": list(RIGHT)}
    per_candidate = {}
    for name, right in RIGHT.items():
        rows = []
        for i, ex in enumerate(examples):
            score = float(i in right)
            rows.append(
                {
                    "id": ex["id"],
                    "reply": _reply(name, i, ex["reference"]),
                    "error": None,
                    "status": "ok",
                    "answer": None,
                    "raw_answer": None,
                    "reference": ex["reference"],
                    "score": score,
                    "flexible_score": score,
                    "finish_reason": "stop",
                    "completion_tokens": 8,
                    "prompt_tokens": 40,
                    "latency_s": 0.05,
                }
            )
        write_predictions(run.eval_dir / "predictions" / f"{name}.jsonl", rows)
        summary = summarize(rows, 200, 0)
        summary.update(
            role="student" if name == "distilled" else name,
            model=name,
            backend="local",
            prompt_style="zero_shot",
            shots=0,
            max_tokens=64,
            procedure=None,
            base=None,
            identity=name,
            requests_measured=len(rows),
            tokens_per_s=None,
            seconds_per_1k_requests=None,
            cost_per_1k_requests=None,
            cost_basis="not measured",
        )
        results["candidates"][name] = summary
        per_candidate[name] = [r["score"] for r in rows]
    for other in ("base_student", "teacher"):
        comp = paired_comparison(per_candidate["distilled"], per_candidate[other], 200, 0)
        results["comparisons"].append(
            {"a": "distilled", "b": other, "metric": "accuracy", **comp, "flexible": comp}
        )
    results.update(
        calculator=False,
        task="classification",
        headline="accuracy",
        metric_order=["accuracy", "macro_f1"],
        local_price_per_hour=0.0,
        checks={},
        warnings=[],
        failed_calls=0,
        calls=len(RIGHT) * len(examples),
    )
    write_record(run.eval_dir / "scores.json", Scores.model_validate(results))
    write_record(
        run.synth_dir / "summary.json",
        synth_summary(accepted=30, teacher_accuracy_on_train=0.8, rejected={}),
    )
    return run


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., RunFolder]:
    def make(grade: dict[str, Any] | None = None, name: str = "run") -> RunFolder:
        return build_run(tmp_path / name, grade)

    return make
