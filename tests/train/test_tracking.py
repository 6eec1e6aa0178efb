import struct
from pathlib import Path
from typing import Any

import pytest
from run_records import train_summary

from potstill.config import ConfigError, RunConfig, parse_config
from potstill.files import read_json, write_json
from potstill.records import write_record, write_training_rows
from potstill.runs import RunFolder
from potstill.tasks import build_task
from potstill.train.stage import train_student
from potstill.train.tracking import (
    TRACKERS_FILE,
    check_trackers,
    log_evaluation,
    sft_arguments,
    tracker_problems,
)

ROWS = [
    {
        "id": str(i),
        "prompt": [{"role": "user", "content": f"Tom has {i} apples and buys 2 more."}],
        "completion": [{"role": "assistant", "content": f"{i} + 2"}],
    }
    for i in range(8)
]


def _config(model_dir: Path, report_to: list[str]) -> RunConfig:
    train = {"epochs": 1, "batch_size": 2, "save_steps": 2, "dev_fraction": 0.25}
    tree = {
        "name": "tracked",
        "task": {"kind": "math", "calculator": True},
        "dataset": {"path": "x.jsonl"},
        "students": [
            {
                "name": "s",
                "base": {"model": str(model_dir)},
                "train": {**train, "report_to": report_to},
            }
        ],
    }
    return parse_config(tree, "t.yaml")


def _events(folder: Path) -> list[Any]:
    """Every event in the TensorBoard event files under folder (TFRecord framing)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            events.append(Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return events


def _scalars(events: list[Any]) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def _scores() -> dict[str, Any]:
    entry = {"ci_low": 0.4, "ci_high": 0.8, "n": 20, "higher_is_better": True, "percent": True}
    return {
        "candidates": {"s": {"metrics": {"accuracy": {"value": 0.6, **entry}}}},
        "transfer": {
            "gsm": {"candidates": {"s": {"metrics": {"accuracy": {"value": 0.5, **entry}}}}}
        },
    }


def test_tensorboard_holds_the_training_curve_and_the_evaluation_with_intervals(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = RunFolder(tmp_path / "tracked")
    write_training_rows(run.synth_dir / "train.jsonl", ROWS)
    config = _config(tiny_model_dir, ["tensorboard"])
    summary = train_student(run, config, build_task(config.task), config.students[0])
    folder = run.student_dir("s")
    record = read_json(folder / TRACKERS_FILE)
    assert record == {"tensorboard": {"logging_dir": str(folder / "tensorboard")}}

    assert log_evaluation(run, config, _scores()) == ["s/tensorboard"]
    scalars = _scalars(_events(folder / "tensorboard"))
    # TRL's training curve, every optimizer step, in the student's own folder ...
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    assert "eval/loss" in scalars
    # ... and the evaluation, its interval and n at the training's last step, in the same run.
    last = summary["steps"]
    assert scalars["eval_test/accuracy"] == [(last, pytest.approx(0.6))]
    assert scalars["eval_test/accuracy_ci_low"] == [(last, pytest.approx(0.4))]
    assert scalars["eval_test/accuracy_ci_high"] == [(last, pytest.approx(0.8))]
    assert scalars["eval_test/accuracy_n"] == [(last, 20.0)]
    assert scalars["eval_gsm/accuracy"] == [(last, pytest.approx(0.5))]
    texts = [
        v.tensor.string_val[0].decode()
        for e in _events(folder / "tensorboard")
        for v in e.summary.value
        if v.tag.startswith("evaluation")
    ]
    assert texts == [
        "- test accuracy: 60.0% [40.0%, 80.0%] (n=20)\n- gsm accuracy: 50.0% [40.0%, 80.0%] (n=20)"
    ]


def test_nothing_is_logged_unless_a_tracker_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_model_dir, [])
    assert sft_arguments(config.students[0], tmp_path / "runs/r/students/s") == {
        "report_to": "none"
    }
    # Unset, the key stays out of the config copy and the students' fingerprints.
    assert "report_to" not in config.students[0].train.model_dump()
    named = sft_arguments(
        _config(tiny_model_dir, ["mlflow"]).students[0], tmp_path / "r/students/s"
    )
    assert named == {"report_to": ["mlflow"], "run_name": "r/s", "project": "r"}


def test_a_tracker_that_is_not_installed_is_a_config_error_naming_the_key(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from potstill.train import tracking

    # As on a machine without wandb, whatever this one has.
    monkeypatch.setattr(tracking, "_installed", lambda module: module != "wandb")
    config = _config(tiny_model_dir, ["tensorboard", "wandb"])
    problems = tracker_problems(config)
    assert problems == [
        "students.0.train.report_to: wandb is not installed here (pip install wandb), or take "
        "it out of report_to"
    ]
    with pytest.raises(ConfigError, match=r"students\.0\.train\.report_to: wandb"):
        check_trackers(config)
    with pytest.raises(ConfigError, match="report_to"):
        parse_config(
            {
                "name": "x",
                "task": {"kind": "math"},
                "dataset": {"path": "x.jsonl"},
                "students": [{"train": {"report_to": ["comet"]}}],
            },
            "t.yaml",
        )


def test_potstill_check_names_a_tracker_that_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from potstill.cli import app
    from potstill.train import tracking

    monkeypatch.setattr(tracking, "_installed", lambda module: module != "mlflow")
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: t\ntask: {kind: math, calculator: true}\n"
        "dataset: {generator: {size: 12, seed: 1}, test_size: 4}\n"
        "students: [{name: s, train: {report_to: [mlflow]}}]\n"
    )
    result = CliRunner().invoke(app, ["check", str(config), "--runs-dir", str(tmp_path / "runs")])
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in out
    assert "students.0.train.report_to: mlflow is not installed here (pip install mlflow)" in out


def test_the_evaluate_stage_logs_to_the_students_tracker_run(
    make_evaluated_run: Any,
) -> None:
    from potstill.pipeline import run_stage

    run, config = make_evaluated_run("students.0.train.report_to=[tensorboard]")
    folder = run.student_dir("distilled")
    board = {"logging_dir": str(folder / "tensorboard")}
    write_json(folder / TRACKERS_FILE, {"tensorboard": board})  # as training records it
    write_record(folder / "summary.json", train_summary(steps=7))
    run.mark_done("synth", "-", 0.0)
    run.mark_done("train", "-", 0.0)
    run_stage(run, config, "evaluate")
    scores = read_json(run.eval_dir / "scores.json")
    accuracy = scores["candidates"]["distilled"]["metrics"]["accuracy"]
    scalars = _scalars(_events(folder / "tensorboard"))
    assert scalars["eval_test/accuracy"] == [(7, pytest.approx(accuracy["value"]))]
    assert scalars["eval_test/accuracy_ci_high"] == [(7, pytest.approx(accuracy["ci_high"]))]
