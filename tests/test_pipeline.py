"""The whole run, end to end, on a few examples with the real packaged SmolLM2 as teacher."""

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import builtin_config_path
from potstill.data.loading import DatasetError
from potstill.files import read_jsonl
from potstill.runs import RunFolder


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
    # The packaged 135M judge's verdicts follow the answers' order: past the flip limit its
    # scores are no evidence, they leave the tables and the report says why.
    judge = scores["judge"]
    if judge["bias"]["flip_rate"] is not None and judge["bias"]["flip_rate"] >= 0.5:
        assert judge["trusted"] is False and "pairwise verdicts changed" in judge["reasons"][0]
    assert judge["trusted"] is (not judge["reasons"])
    assert ("**Not to be trusted: this judge failed its own checks:**" in report) is (
        not judge["trusted"]
    )
    if not judge["trusted"]:
        assert all("judge_score" not in c["metrics"] for c in scores["candidates"].values())
    # A student of a few rows for a few steps is said to be one.
    assert {"student_rows", "student_steps"} <= {w["check"] for w in scores["warnings"]}
    assert "train[distilled]: warning: distilled was trained on" in " ".join(result.output.split())
    plots = sorted((run.root / "plots").glob("*.png"))
    assert {p.name for p in plots} >= {"metric_accuracy.png", "accuracy_vs_cost.png"}
    html = (run.root / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(plots)
    assert "training_loss.png" in {p.name for p in plots}

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


def test_stop_after_must_name_a_stage(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntask: {kind: math}\ndataset: {path: d.jsonl}\n")
    args = ["run", str(path), "--stop-after", "trian", "--runs-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--stop-after must be one of" in result.output


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


def _word_problems(tmp_path: Path) -> dict[str, Any]:
    """A run config over word-problem files of its own: training, test and a transfer set
    whose columns differ; the models are never reached by the tests that use it."""
    rows = [
        {
            "id": f"w{i}",
            "question": f"Ann has {i} pens and buys {i + 2} more at the shop. How many?",
        }
        for i in range(6)
    ]
    for row in rows:
        row["answer"] = str(2 * int(row["id"][1:]) + 2)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    other = [{"uid": "r1", "problem": "Compute one quarter of 36 marbles.", "solution": "9"}]
    (tmp_path / "rephrased.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    return {
        "name": "sets",
        "task": {"kind": "math"},
        "dataset": {"path": "train.jsonl", "test": "test.jsonl"},
        "teacher": {
            "model": {
                "backend": "openai",
                "model": "never-called",
                "api_key_env": "POTSTILL_TEST_KEY_NEVER_SET",
            },
            "prompt": {
                "style": "cot",
                "shots": [
                    {"inputs": {"question": "Bo has 3 cups. How many?"}, "answer": "3"},
                ],
            },
        },
        "evaluate": {
            "transfer": [
                {
                    "name": "rephrased",
                    "path": "rephrased.jsonl",
                    "fields": {"id": "uid", "question": "problem", "answer": "solution"},
                }
            ]
        },
    }


def _run_cli(tmp_path: Path, tree: dict[str, Any]) -> Any:
    import yaml

    path = tmp_path / "sets.yaml"
    path.write_text(yaml.safe_dump(tree))
    return CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])


@pytest.mark.parametrize(
    ("shot", "named"),
    [
        ("Ann has 4 pens and buys 6 more at the shop. How many?", "has the same words as test"),
        ("compute ONE quarter of 36 marbles", "has the same words as transfer set 'rephrased'"),
        ("Ann has 5 pens and buys 7 more at the shop", "nearly repeats test example 'w5' (100.0%"),
        # A short shot inside an evaluation input is not a copy of it.
        ("Ann has 5 pens", None),
    ],
)
def test_a_worked_example_that_is_an_evaluation_example_exits_2_before_any_folder(
    tmp_path: Path, shot: str, named: str | None
) -> None:
    tree = _word_problems(tmp_path)
    tree["teacher"]["prompt"]["shots"].append({"inputs": {"question": shot}, "answer": "1"})
    result = _run_cli(tmp_path, tree)
    assert result.exit_code == 2, result.output
    if named is None:  # it gets as far as the API key the config names (never set)
        assert "POTSTILL_TEST_KEY_NEVER_SET is not set" in " ".join(result.output.split())
        return
    message = " ".join(result.output.split())
    assert "error: worked examples repeat evaluation examples" in message
    assert f"teacher.prompt.shots.1 ({shot!r}) {named}" in message
    assert "teacher.prompt.shots.0" not in message  # the unrelated shot is not blamed
    assert not (tmp_path / "runs").exists()


def test_a_worked_example_drawn_into_the_random_test_split_is_named_too(tmp_path: Path) -> None:
    """The plain case: one source split at random, and a shot that is one of its test inputs
    (this used to run, and report "train/test overlap: 0 of 2")."""
    from potstill.config import parse_config
    from potstill.pipeline import absolutize, load_split

    tree = _word_problems(tmp_path)
    del tree["evaluate"]
    tree["dataset"] = {"path": "train.jsonl", "test_size": 2}
    test = load_split(absolutize(parse_config(tree, "sets.yaml"), tmp_path)).test
    shot = {"inputs": test[1].inputs, "answer": "1"}
    tree["teacher"]["prompt"]["shots"].append(shot)
    result = _run_cli(tmp_path, tree)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"teacher.prompt.shots.1 ({test[1].inputs['question']!r}) has the same words as " in (
        message
    )
    assert f"test example {test[1].id!r}" in message
    assert not (tmp_path / "runs").exists()


def test_transfer_sets_are_pinned_beside_the_split_and_removed_with_the_config(
    tmp_path: Path,
) -> None:
    from potstill.config import parse_config
    from potstill.pipeline import (
        absolutize,
        fingerprint,
        open_run,
        prepare_split,
        prepare_transfer,
        transfer_is_pinned,
    )

    tree = _word_problems(tmp_path)
    config = absolutize(parse_config(tree, "sets.yaml"), tmp_path)
    run = open_run(config, tmp_path / "runs")
    split, sets = prepare_split(run, config), prepare_transfer(run, config)
    assert sorted(e.id for e in split.train) == ["w0", "w1", "w2", "w3"]
    assert [e.id for e in split.test] == ["w4", "w5"]
    assert [(e.id, e.inputs, e.reference) for e in sets["rephrased"]] == [
        ("r1", {"question": "Compute one quarter of 36 marbles."}, "9")
    ]
    pinned = run.data_dir / "transfer" / "rephrased.jsonl"
    assert read_jsonl(pinned) == [e.to_json() for e in sets["rephrased"]]
    assert transfer_is_pinned(run, config)
    # The pinned copy is what later stages read; a source changed since is refused by name.
    assert prepare_transfer(run, config) == sets
    (tmp_path / "rephrased.jsonl").write_text("")
    with pytest.raises(DatasetError, match=r"evaluate\.transfer\.0: .*rephrased\.jsonl changed"):
        prepare_transfer(run, config)
    # Training inputs are screened against the transfer sets: they are part of synth's input.
    without = config.model_copy(
        update={"evaluate": config.evaluate.model_copy(update={"transfer": []})}
    )
    assert fingerprint(run, without, "synth") != fingerprint(run, config, "synth")
    assert not transfer_is_pinned(run, without)  # a set no longer configured is still there
    assert prepare_transfer(run, without) == {}
    assert not (run.data_dir / "transfer").exists()


def test_a_dataset_edited_in_place_is_refused_until_a_new_run_or_refresh(
    fake_teacher: Any, tmp_path: Path
) -> None:
    import hashlib

    import yaml

    teacher = fake_teacher()
    data = tmp_path / "reviews.jsonl"
    rows = [
        {"text": f"Review {i}: the lamp was {w}.", "label": "good" if w == "great" else "bad"}
        for i, w in enumerate(["great", "awful"] * 6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    teacher_model = {"backend": "openai", "model": "fake", "base_url": teacher.url}
    tree = {
        "name": "edited",
        "task": {"kind": "classification", "labels": ["good", "bad"]},
        "dataset": {"path": "reviews.jsonl", "fields": {"answer": "label"}, "test_size": 4},
        "teacher": {"model": teacher_model},
    }
    config.write_text(yaml.safe_dump(tree))
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--stop-after", "synth"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    run = RunFolder(runs / "edited")
    recorded = json.loads(run.manifest_path.read_text())["data"]["sources"]
    assert recorded == {
        "dataset": {"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    }

    def snapshot() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(run.root.rglob("*")) if p.is_file()}

    before = snapshot()
    rows[0]["label"] = "bad"  # the same file, edited in place; the config is unchanged
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for again in (args, ["synth", str(run.root)]):
        refused = CliRunner().invoke(app, again)
        assert refused.exit_code == 2, refused.output
        message = " ".join(refused.output.split())
        assert f"error: dataset: {data} changed since the split was pinned" in message
        assert "start a new run (another `name`), or run `potstill run CONFIG --refresh`" in message
        assert snapshot() == before  # nothing rewritten
    checked = CliRunner().invoke(app, ["check", str(config), "--runs-dir", str(runs)])
    assert checked.exit_code == 2 and "changed since the split was pinned" in checked.output
    sent = sum(teacher.answered.values())
    refreshed = CliRunner().invoke(app, [*args, "--refresh"])
    assert refreshed.exit_code == 0, refreshed.output
    assert "up to date, skipped" not in refreshed.output  # every stage runs again
    pinned = read_jsonl(run.data_dir / "train.jsonl") + read_jsonl(run.data_dir / "test.jsonl")
    first_row = next(r for r in pinned if r["inputs"]["text"] == rows[0]["text"])
    assert first_row["reference"] == "bad"  # the new rows
    assert sum(teacher.answered.values()) == sent  # same inputs: the stored answers serve
    settled = CliRunner().invoke(app, args)
    assert settled.exit_code == 0 and "synth: up to date, skipped" in settled.output


def test_a_dry_run_reads_a_run_that_another_process_is_writing(tmp_path: Path) -> None:
    from lock_holder import holding_run_lock

    from potstill.config import parse_config
    from potstill.pipeline import absolutize, open_run

    config = absolutize(parse_config(_word_problems(tmp_path), "sets.yaml"), tmp_path)
    run = open_run(config, tmp_path / "runs")  # a run folder whose split is not pinned yet
    with holding_run_lock(run.root):
        before = sorted(p.name for p in run.root.iterdir())
        shown = CliRunner().invoke(app, ["synth", str(run.root), "--dry-run"])
        assert shown.exit_code == 0, shown.output
        assert sorted(p.name for p in run.root.iterdir()) == before  # it wrote nothing
        refused = CliRunner().invoke(app, ["synth", str(run.root)])
        assert refused.exit_code == 2
        assert "another potstill process is writing this run folder" in refused.output


def test_each_pin_of_the_split_makes_the_synth_stage_stale(tmp_path: Path) -> None:
    from potstill.config import parse_config
    from potstill.pipeline import absolutize, fingerprint, open_run, pin_split, prepare_split

    config = absolutize(parse_config(_word_problems(tmp_path), "sets.yaml"), tmp_path)
    run = open_run(config, tmp_path / "runs")
    split = prepare_split(run, config)
    before = fingerprint(run, config, "synth")
    pin_split(run, config, split)  # the same rows, pinned again at once (--refresh)
    assert fingerprint(run, config, "synth") != before
