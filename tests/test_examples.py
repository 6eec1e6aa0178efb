"""Every example config runs end to end with `potstill run` on the packaged SmolLM2 teacher and
student and its fixture data, and its report shows the kind's metrics with intervals.

math.yaml also has a test file of its own and a transfer set: its 6 problems add 18 generation
calls (3 candidates; the base student's are the zero-shot teacher's, stored), about 19 s of
its evaluate stage's 3m25s on the 2-core machine at load 8, where the judge takes 2m36s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import load_config
from potstill.report.stage import metric_text
from potstill.tasks import build_task

EXAMPLES = sorted(Path("configs/examples").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_runs_end_to_end(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    task = build_task(config.task)
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = tmp_path / config.name
    scores = json.loads((run / "eval" / "scores.json").read_text())
    report = (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    assert {"teacher", "base_student", "distilled"} <= set(scores["candidates"])
    declared = {m.name: m for m in task.metrics}
    # Beside the task's own metrics: the flexible reading of the headline and the judge's.
    extra = {f"flexible_{task.metrics[0].name}", "judge_score", "judge_win_rate"}
    for metric in declared:
        assert f"{metric} [95% CI]" in report and f"{metric} [95% CI]" in html
    for name, candidate in scores["candidates"].items():
        metrics = candidate["metrics"]
        assert set(metrics) <= set(declared) | extra
        # every metric that compares with a reference is there (an unusable reply scores 0)
        assert {m for m, d in declared.items() if d.needs_reference} <= set(metrics)
        for metric, entry in metrics.items():
            assert entry["n"] >= 1
            assert entry["ci_low"] - 1e-9 <= entry["value"] <= entry["ci_high"] + 1e-9
            assert metric_text(entry) in report, (name, metric)
        if config.task.kind == "classification":
            assert sum(map(sum, candidate["confusion"]["matrix"])) == metrics["accuracy"]["n"]
            assert f"Confusion matrix, {name}" in report
    rows = [json.loads(line) for line in (run / "eval/predictions/distilled.jsonl").open()]
    assert len(rows) == len((run / "data/test.jsonl").read_text().splitlines())
    if config.dataset.test is None:
        assert len(rows) == config.dataset.test_size
    headline = task.metrics[0].name
    assert all(r["score"] == r["scores"].get(headline) for r in rows)
    for source in config.evaluate.transfer:  # scored like the test split, in its own section
        pinned = (run / "data/transfer" / f"{source.name}.jsonl").read_text().splitlines()
        on_set = scores["transfer"][source.name]
        assert on_set["n"] == len(pinned) and set(on_set["candidates"]) == set(scores["order"])
        for name, candidate in on_set["candidates"].items():
            assert {m for m, d in declared.items() if d.needs_reference} <= set(
                candidate["metrics"]
            )
            for entry in candidate["metrics"].values():
                assert metric_text(entry) in report, (source.name, name)
            predictions = run / "eval/transfer" / source.name / "predictions" / f"{name}.jsonl"
            assert len(predictions.read_text().splitlines()) == len(pinned)
        assert len(on_set["comparisons"]) == len(scores["comparisons"])
        assert f"## Transfer set: {source.name}" in report
        assert f"<h2>Transfer set: {source.name}</h2>" in html
        # A verdict block of its own, after the test split's.
        assert report.index("**Test split (") < report.index(f"**Transfer set {source.name} (")
    # The report opens with the verdict, on the headline metric, for every student.
    assert report.splitlines()[:3] == [f"# potstill report: {config.name}", "", "## Verdict"]
    assert f"- distilled: {headline} " in report
