import json
from pathlib import Path
from typing import Any

from potstill.config import parse_config
from potstill.report.stage import run_report
from potstill.runs import RunFolder, write_json

CONFIG = parse_config(
    {
        "name": "r",
        "task": {"kind": "classification", "labels": ["yes", "no"]},
        "dataset": {"path": "x.jsonl"},
    },
    "r.yaml",
)


def _candidate(role: str, accuracy: float) -> dict[str, Any]:
    interval = {"ci_low": accuracy - 0.1, "ci_high": accuracy + 0.1, "n": 10}
    return {
        "role": role,
        "model": "m",
        "prompt_style": "zero_shot",
        "shots": 0,
        "n": 10,
        "accuracy": accuracy,
        "ci_low": accuracy - 0.1,
        "ci_high": accuracy + 0.1,
        "flexible_accuracy": accuracy,
        "flexible_ci_low": accuracy - 0.1,
        "flexible_ci_high": accuracy + 0.1,
        "no_answer_rate": 0.0,
        "malformed_rate": 0.0,
        "call_failed_rate": 0.0,
        "mean_completion_tokens": 2.0,
        "mean_prompt_tokens": 30.0,
        "mean_latency_s": 0.1,
        "p95_latency_s": 0.2,
        "metrics": {
            "accuracy": {"value": accuracy, **interval, "higher_is_better": True},
            "macro_f1": {"value": 0.5, **interval, "higher_is_better": True},
        },
        "confusion": {
            "labels": ["yes", "no"],
            "columns": ["yes", "no", "no answer"],
            "matrix": [[4, 1, 0], [2, 3, 0]],
        },
    }


def test_report_renders_every_metric_with_its_interval_and_the_confusion(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "r")
    comparison = {
        "a": "distilled",
        "b": "teacher",
        "metric": "accuracy",
        "n": 10,
        "difference": 0.1,
        "ci_low": -0.2,
        "ci_high": 0.3,
        "a_only_correct": None,
        "b_only_correct": None,
        "mcnemar_p": None,
        "flexible": {"difference": 0.1, "ci_low": -0.2, "ci_high": 0.3},
    }
    scores = {
        "candidates": {
            "teacher": _candidate("teacher", 0.7),
            "distilled": _candidate("student", 0.8),
        },
        "comparisons": [comparison],
        "order": ["teacher", "distilled"],
        "headline": "accuracy",
    }
    write_json(run.eval_dir / "scores.json", scores)
    summary = {"inputs": 4, "accepted": 3, "rejected": {}, "teacher_accuracy_on_train": 0.75}
    write_json(run.synth_dir / "summary.json", summary)
    report = run_report(run, CONFIG).read_text()
    # Every metric of the mapping is a column of the comparison table, with its interval.
    assert "| accuracy [95% CI] | macro_f1 [95% CI] |" in report
    assert "| distilled | student | zero_shot, 0-shot | 0.8 [0.7, 0.9] | 0.5 [0.7, 0.9] |" in report
    table = report[report.index("Confusion matrix, teacher") :].split("\n\n")[1]
    assert table.splitlines() == [
        "| reference \\ predicted | yes | no | no answer |",
        "|---|---|---|---|",
        "| yes | 4 | 1 | 0 |",
        "| no | 2 | 3 | 0 |",
    ]
    assert "| distilled | teacher | +10.0 pts | [-20.0, +30.0] | n/a | n/a | n/a |" in report
    html = (run.root / "report.html").read_text()
    assert "macro_f1 [95% CI]" in html and "<th>no answer</th>" in html
    assert json.loads((run.eval_dir / "scores.json").read_text())["headline"] == "accuracy"
