"""configs/distill-losses.yaml end to end on a few examples: an sft, a kd and an on_policy
student from the same teacher calls, trained, evaluated and compared in one run."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.files import read_jsonl
from potstill.runs import RunFolder
from potstill.synth import logprobs as synth_logprobs

STUDENTS = ["sft", "kd", "on_policy"]


@pytest.mark.slow
def test_distill_losses_trains_and_compares_three_losses(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    overrides = [
        "dataset.generator.size=12",
        "dataset.test_size=4",
        "teacher.prompt.max_tokens=40",
        "synth.prompt.max_tokens=8",
        "evaluate.teacher_zero_shot=false",
        "synth.logprobs=5",
        "evaluate.bootstrap_samples=100",
    ]
    for i in range(len(STUDENTS)):
        overrides += [
            f"students.{i}.base.model={tiny_model_dir}",
            f"students.{i}.train.epochs=1",
            f"students.{i}.train.batch_size=4",
        ]
    args = ["run", "configs/distill-losses.yaml", *overrides, "--runs-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = RunFolder(tmp_path / "distill-losses")
    rows = read_jsonl(run.synth_dir / "train.jsonl")
    dists = synth_logprobs.read(run.synth_dir / synth_logprobs.FILE)
    assert set(dists.rows) == {r["id"] for r in rows} and dists.k == 5
    summary = json.loads((run.synth_dir / "summary.json").read_text())
    assert sum(summary["logprobs"]["rows"].values()) == len(rows)
    trained = {s: json.loads((run.student_dir(s) / "summary.json").read_text()) for s in STUDENTS}
    assert [trained[s]["loss"] for s in STUDENTS] == STUDENTS
    assert all(trained[s]["tokens_seen"] > 0 and trained[s]["seconds"] for s in STUDENTS)
    # sft and kd learn from the same rows; on_policy from the student's own samples of them.
    assert trained["sft"]["rows"] == trained["kd"]["rows"]
    samples = read_jsonl(run.student_dir("on_policy") / "train.jsonl")
    assert {s["id"].split("~p")[0] for s in samples} <= {r["id"] for r in rows}
    scores = json.loads((run.eval_dir / "scores.json").read_text())
    assert scores["order"] == ["teacher", "base_student", *STUDENTS]
    report = (run.root / "report.md").read_text()
    assert all(f"| {s} | student |" in report for s in STUDENTS)
    assert "## Training" in report
    for s in STUDENTS:
        assert f"| {s} | {s} |" in report  # the training table: name, loss, ...
    # Each student is compared with each student trained before it, from the predictions.
    pairs = {(c["a"], c["b"]): c for c in scores["comparisons"]}
    assert {("kd", "sft"), ("on_policy", "sft"), ("on_policy", "kd")} <= set(pairs)
    predictions = {
        s: {r["id"]: r["score"] for r in read_jsonl(run.eval_dir / "predictions" / f"{s}.jsonl")}
        for s in STUDENTS
    }
    kd_sft = pairs[("kd", "sft")]
    shared = [i for i in predictions["kd"] if predictions["kd"][i] is not None]
    expected = sum(predictions["kd"][i] - predictions["sft"][i] for i in shared) / len(shared)
    assert kd_sft["difference"] == pytest.approx(expected) and kd_sft["n"] == len(shared)
    assert "| kd | sft |" in report and "| on_policy | kd |" in report
