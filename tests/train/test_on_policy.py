"""train.loss on_policy: the student samples completions for the training inputs, the local
teacher scores every token of them, the student trains on the KL alone; samples and scores
are cached in calls.sqlite, so a second run samples and scores nothing again."""

import json
from pathlib import Path
from typing import Any

import pytest
from run_records import teacher_row

from potstill.config import ConfigError, parse_config
from potstill.records import (
    TrainLogEntry,
    read_records,
    read_training_rows,
    write_records,
    write_training_rows,
)
from potstill.runs import RunFolder
from potstill.tasks import build_task
from potstill.train.stage import train_student

QUESTIONS = [f"Tom has {i} apples and buys {i % 3 + 2} more. How many now?" for i in range(6)]


def _tree(model_dir: Path) -> dict[str, Any]:
    local = {"backend": "local", "model": str(model_dir), "batch_size": 4}
    train = {"loss": "on_policy", "on_policy_samples": 2, "max_steps": 3, "batch_size": 2}
    train.update({"dev_fraction": 0.0, "save_steps": 2, "epochs": 1, "learning_rate": 1e-2})
    return {
        "name": "t",
        "task": {"kind": "math", "calculator": True},
        "dataset": {"path": "x.jsonl"},
        "teacher": {"model": local, "prompt": {"style": "cot", "max_tokens": 8}},
        "synth": {"logprobs": 4, "prompt": {"style": "zero_shot", "max_tokens": 6}},
        "students": [{"name": "op", "base": local, "train": train}],
    }


def _run(tmp_path: Path, config: Any) -> RunFolder:
    task = build_task(config.task)
    run = RunFolder(tmp_path / "run")
    records = [{"id": str(i), "inputs": {"question": q}} for i, q in enumerate(QUESTIONS)]
    rows = [
        {
            "id": r["id"],
            "prompt": task.messages(r["inputs"], config.synth.prompt),
            "completion": [{"role": "assistant", "content": "1 + 1"}],
        }
        for r in records
    ]
    write_records(run.synth_dir / "teacher.jsonl", [teacher_row(**r) for r in records])
    write_training_rows(run.synth_dir / "train.jsonl", rows)
    return run


def test_on_policy_trains_on_its_own_samples_scored_by_the_teacher(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(_tree(tiny_model_dir), "t.yaml")
    run = _run(tmp_path, config)
    task = build_task(config.task)
    summary = train_student(run, config, task, config.students[0])
    samples = read_training_rows(run.student_dir("op") / "train.jsonl")
    assert len(samples) == 2 * len(QUESTIONS)
    assert {s["id"] for s in samples} == {f"{i}~p{j}" for i in range(6) for j in range(2)}
    assert all(s["completion"][0]["content"] != "1 + 1" for s in samples)  # its own text
    assert summary["loss"] == "on_policy" and summary["steps"] == 3
    assert summary["kd_rows_without_teacher"] == 0
    log = [
        e.as_written()
        for e in read_records(run.student_dir("op") / "train_log.jsonl", TrainLogEntry)
    ]
    assert [e["loss"] for e in log if "loss" in e]

    # Retrained from scratch: the samples and the teacher's scores come from calls.sqlite.
    from potstill.synth import logprobs as synth_logprobs

    def no_forward_pass(*args: Any) -> None:
        raise AssertionError("a stored scoring call was computed again")

    monkeypatch.setattr(synth_logprobs, "teacher_forced_topk", no_forward_pass)
    tree = _tree(tiny_model_dir)
    tree["students"][0]["train"]["resume"] = "never"
    again = parse_config(tree, "t.yaml")
    train_student(run, again, task, again.students[0])
    assert read_training_rows(run.student_dir("op") / "train.jsonl") == samples


def test_on_policy_needs_a_local_teacher(tiny_model_dir: Path) -> None:
    tree = _tree(tiny_model_dir)
    tree["teacher"]["model"] = {"backend": "openai", "model": "m", "base_url": "http://x/v1"}
    with pytest.raises(ConfigError, match="needs a local teacher"):
        parse_config(json.loads(json.dumps(tree)), "t.yaml")
