"""configs/paper-matrix.yaml end to end on a few examples: four student variants in one run."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.files import read_jsonl
from potstill.runs import RunFolder

VARIANTS = ["gold", "teacher_answer", "teacher_rationale", "teacher_answer_unchecked"]


@pytest.mark.slow
def test_paper_matrix_trains_and_evaluates_every_variant(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    overrides = [
        "dataset.generator.size=16",
        "dataset.test_size=4",
        "synth.prompt.max_tokens=8",
        "evaluate.bootstrap_samples=100",
        "judge.enabled=false",  # the judge has its own tests; here the students are the point
    ]
    for i in range(len(VARIANTS)):
        overrides += [
            f"students.{i}.base.model={tiny_model_dir}",
            f"students.{i}.train.epochs=1",
            f"students.{i}.train.batch_size=4",
        ]
    args = ["run", "configs/paper-matrix.yaml", *overrides, "--runs-dir", str(tmp_path)]
    labelled = CliRunner().invoke(app, [*args, "--stop-after", "synth"])
    assert labelled.exit_code == 0, labelled.output
    run = RunFolder(tmp_path / "paper-matrix")
    assert set(json.loads(run.manifest_path.read_text())["stages"]) == {"synth"}
    assert not (run.root / "students").exists()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "synth: up to date, skipped" in result.output
    teacher = read_jsonl(run.synth_dir / "teacher.jsonl")
    gold_inputs = read_jsonl(run.data_dir / "train.jsonl")
    rows = {v: read_jsonl(run.student_dir(v) / "train.jsonl") for v in VARIANTS}

    assert [r["completion"][0]["content"] for r in rows["gold"]] == [
        e["reference"] for e in gold_inputs
    ]
    accepted = [t for t in teacher if t["rejected"] is None]
    assert [r["id"] for r in rows["teacher_answer"]] == [t["id"] for t in accepted]
    assert all("reason" not in r["completion"][0]["content"] for r in rows["teacher_answer"])
    for row in rows["teacher_rationale"]:
        assert json.loads(row["completion"][0]["content"])["reason"] == row["rationale"]
    assert len(rows["teacher_answer_unchecked"]) >= len(rows["teacher_answer"])

    for variant in VARIANTS:
        summary = json.loads((run.student_dir(variant) / "summary.json").read_text())
        assert summary["data"]["rows"] == len(rows[variant]) > 0
        assert (run.student_dir(variant) / "final" / "config.json").exists()
    scores = json.loads((run.eval_dir / "scores.json").read_text())
    assert scores["order"] == ["teacher", "teacher_zero_shot", "base_student", *VARIANTS]
    report = (run.root / "report.md").read_text()
    assert all(f"| {v} | student |" in report for v in VARIANTS)
    assert (run.root / "plots" / "training_loss.png").exists()
