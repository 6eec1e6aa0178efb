"""The whole run, end to end, on a few examples with the real packaged SmolLM2 as teacher."""

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import builtin_config_path
from potstill.runs import RunFolder, read_jsonl


@pytest.mark.slow
def test_demo_pipeline_on_a_few_examples(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = [
        "run",
        str(builtin_config_path("demo")),
        "dataset.generator.size=20",
        "dataset.test_size=6",
        "students.0.train.epochs=1",
        "students.0.train.batch_size=4",
        f"students.0.base.model={tiny_model_dir}",
        "evaluate.bootstrap_samples=200",
        "judge.sample_size=3",
        "--runs-dir",
        str(runs),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = RunFolder(runs / "demo")
    manifest = json.loads(run.manifest_path.read_text())
    assert [manifest["stages"][s]["status"] for s in ("synth", "train", "evaluate", "report")] == [
        "done"
    ] * 4
    teacher = read_jsonl(run.synth_dir / "teacher.jsonl")
    train = read_jsonl(run.synth_dir / "train.jsonl")
    assert len(teacher) == 14
    assert len(train) == sum(row["rejected"] is None for row in teacher) > 0
    for row in train:  # the student learns the teacher's expression, zero-shot, no reasoning
        assert row["prompt"][-1]["role"] == "user" and len(row["prompt"]) == 2
        assert "reason" not in row["completion"][0]["content"]
    scores = json.loads((run.eval_dir / "scores.json").read_text())
    names = ["teacher", "teacher_zero_shot", "base_student", "distilled"]
    assert scores["order"] == names
    assert all(c["n"] == 6 for c in scores["candidates"].values())
    # The real packaged SmolLM2 judged a sample of 3; every candidate got its judge figures.
    assert scores["judge"]["sample_size"] == 3 and scores["judge"]["same_as_teacher"]
    for name in names:
        judge = scores["candidates"][name]["judge"]
        assert judge["pointwise"]["judged"] == 3
        assert name == "teacher" or judge["pairwise"]["pairs"] == 3
    report = (run.root / "report.md").read_text()
    assert "| teacher |" in report and "| distilled | student |" in report
    assert "## LLM judge" in report and "position-flip rate" in report
    plots = sorted((run.root / "plots").glob("*.png"))
    assert {p.name for p in plots} >= {"metric_accuracy.png", "accuracy_vs_cost.png"}
    html = (run.root / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(plots)

    with sqlite3.connect(run.calls_db) as db:
        calls_before = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("up to date, skipped") == 4
    with sqlite3.connect(run.calls_db) as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == calls_before

    # A change to the students makes train and what follows stale, not the teacher's work.
    changed = CliRunner().invoke(app, [*args, "students.0.train.learning_rate=0.001"])
    assert changed.exit_code == 0, changed.output
    assert changed.output.count("up to date, skipped") == 1
    assert "synth: up to date, skipped" in changed.output
    with sqlite3.connect(run.calls_db) as db:
        models = dict(db.execute("SELECT model, COUNT(*) FROM calls GROUP BY model").fetchall())
    assert sum(models.values()) > calls_before  # the retrained student answered anew
    assert len(models) == 4  # teacher, base and two distinct trained weights


def test_bad_config_exits_2_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntask: {kind: math}\ndataset: {path: d.jsonl}\nteacher: {modle: 1}\n")
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "teacher.modle: unknown key" in result.output
    assert "Traceback" not in result.output


def test_hub_dataset_offline_is_one_line_and_a_local_file_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.config
    import huggingface_hub.constants

    from potstill.config import load_config
    from potstill.pipeline import absolutize, open_run, prepare_split

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    config = Path("configs/examples/multiple_choice.yaml")
    args = ["run", str(config), "dataset.path=hf:org/name", "--runs-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    # one message (the console wraps it to the terminal's width), no traceback
    message = result.output[result.output.index("error:") :]
    assert message.startswith("error: hf:org/name: cannot load this dataset")
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert "Offline? Download it once" in " ".join(result.output.split())
    # The same config with a local file (here: the hub rows saved as JSONL) loads and splits.
    local = tmp_path / "trivia.jsonl"
    local.write_bytes(Path("configs/examples/data/trivia.jsonl").read_bytes())
    cfg = absolutize(load_config(config, [f"dataset.path={local}"]), config.parent)
    split = prepare_split(open_run(cfg, tmp_path), cfg)
    assert len(split.test) == 8 and len(split.train) == 12
