import json
from pathlib import Path
from typing import Any

import pytest
from run_records import teacher_row

from potstill.config import ConfigError, parse_config
from potstill.files import write_jsonl
from potstill.records import read_training_rows, write_records, write_training_rows
from potstill.runs import RunFolder
from potstill.tasks import Example, build_task
from potstill.train.data import split_dev, student_rows

BASE = {
    "name": "t",
    "task": {"kind": "math", "calculator": True},
    "dataset": {"path": "x.jsonl"},
    "synth": {"target": "answer", "require_reference_match": True},
}
Q = {"question": "Tom has 22 stickers and gives away 9. How many are left?"}


def _record(i: int, answer: str, rationale: str | None, rejected: str | None) -> dict:  # type: ignore[type-arg]
    reply = json.dumps({"reason": rationale, "answer": answer})
    return {
        "id": f"e{i}",
        "inputs": Q,
        "reference": "13",
        "reply": reply,
        "status": "ok",
        "answer": str(eval(answer)),
        "raw_answer": answer,
        "rationale": rationale,
        "finish_reason": "stop",
        "error": None,
        "completion_tokens": 20,
        "rejected": rejected,
    }


SYNTH_ROW = {
    "id": "from-synth",
    "prompt": [{"role": "user", "content": Q["question"]}],
    "completion": [{"role": "assistant", "content": "Answer: 13"}],
}
TEACHER = [
    _record(0, "22 - 9", "gives away, so subtract", None),
    _record(1, "22 + 9", "adds", "disagrees_with_reference"),
    _record(2, "22 - 9", None, None),
    {**_record(3, "22 - 9", "cut", None), "rejected": "finish_length", "finish_reason": "length"},
]


def _run(tmp_path: Path) -> RunFolder:
    run = RunFolder(tmp_path / "run")
    write_records(run.synth_dir / "teacher.jsonl", [teacher_row(**r) for r in TEACHER])
    write_training_rows(run.synth_dir / "train.jsonl", [SYNTH_ROW])
    examples = [Example("g0", Q, "13"), Example("g1", Q, None), Example("g2", Q, "lots")]
    write_jsonl(run.data_dir / "train.jsonl", [e.to_json() for e in examples])
    return run


def _rows(tmp_path: Path, data: object) -> tuple[list[dict], dict]:  # type: ignore[type-arg]
    students = [{"name": "s", "data": data}] if data is not None else [{"name": "s"}]
    config = parse_config({**BASE, "students": students}, "t.yaml")
    found = student_rows(_run(tmp_path), config, build_task(config.task), config.students[0])
    return found.rows, found.describe()


def test_default_student_trains_on_synth_train_jsonl(tmp_path: Path) -> None:
    rows, info = _rows(tmp_path, None)
    assert rows == [SYNTH_ROW] and info["source"] == "synth"


def test_teacher_answer_drops_the_reasoning(tmp_path: Path) -> None:
    rows, info = _rows(tmp_path, "teacher_answer")
    assert [r["id"] for r in rows] == ["e0", "e2"]
    assert [r["completion"][0]["content"] for r in rows] == ["22 - 9", "22 - 9"]
    assert info["skipped"] == {"disagrees_with_reference": 1, "finish_length": 1}


def test_teacher_rationale_keeps_it_and_needs_one(tmp_path: Path) -> None:
    rows, info = _rows(tmp_path, "teacher_rationale")
    assert [r["id"] for r in rows] == ["e0"]
    reply = json.loads(rows[0]["completion"][0]["content"])
    assert reply == {"reason": "gives away, so subtract", "answer": "22 - 9"}
    assert rows[0]["rationale"] == "gives away, so subtract"
    assert info["skipped"] == {"no_rationale": 1, "disagrees_with_reference": 1, "finish_length": 1}


def test_user_variant_lifts_the_reference_check_but_not_other_rejections(tmp_path: Path) -> None:
    rows, info = _rows(tmp_path, {"target": "answer", "require_reference_match": False})
    assert [r["id"] for r in rows] == ["e0", "e1", "e2"]  # the cut-off reply stays out
    assert rows[1]["completion"][0]["content"] == "22 + 9"
    assert info["skipped"] == {"finish_length": 1}


def test_gold_trains_on_usable_references(tmp_path: Path) -> None:
    rows, info = _rows(tmp_path, "gold")
    assert [(r["id"], r["completion"][0]["content"]) for r in rows] == [("g0", "13")]
    assert rows[0]["prompt"][-1] == {"role": "user", "content": Q["question"]}
    assert info["skipped"] == {"no_reference": 1, "unusable_reference": 1}


def test_data_presets_and_their_errors() -> None:
    with pytest.raises(ConfigError, match="unknown data preset"):
        parse_config({**BASE, "students": [{"name": "s", "data": "golden"}]}, "t.yaml")
    with pytest.raises(ConfigError, match="no rationale"):
        bad = {"source": "gold", "target": "rationale_answer"}
        parse_config({**BASE, "students": [{"name": "s", "data": bad}]}, "t.yaml")


def test_dev_split_is_seeded_and_disjoint() -> None:
    rows = [{"id": str(i)} for i in range(40)]
    train, dev = split_dev(rows, 0.1, seed=3)
    assert len(dev) == 4 and len(train) == 36
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in dev)
    assert split_dev(rows, 0.1, seed=3) == (train, dev)
    assert split_dev(rows, 0.0, seed=3) == (rows, [])


def test_train_stage_writes_each_students_rows(tmp_path: Path) -> None:
    """The rows land in students/<name>/train.jsonl before any training starts."""
    from potstill.train.lint import TrainingDataError
    from potstill.train.stage import train_student

    run = _run(tmp_path)
    student = {"name": "s", "data": {"target": "rationale_answer", "require_reference_match": True}}
    teacher_only = [r for r in TEACHER if r["rationale"] is None]
    write_records(run.synth_dir / "teacher.jsonl", [teacher_row(**r) for r in teacher_only])
    config = parse_config({**BASE, "students": [student]}, "t.yaml")
    with pytest.raises(TrainingDataError, match="no training rows"):
        train_student(run, config, build_task(config.task), config.students[0])
    assert read_training_rows(run.student_dir("s") / "train.jsonl") == []


# The paper's matrix of students (configs/paper-matrix.yaml) on an open-text task and on a
# labelled one: every teacher variant gets rows, because synth and the variants share one rule.

MATRIX = Path(__file__).parents[2] / "configs" / "paper-matrix.yaml"
TASKS = {
    "summarization": (
        {"kind": "summarization"},
        {"document": "The council met on Monday and voted to reopen the old library."},
        "The council voted to reopen the library.",
        '{"reason": "The vote is the news.", "answer": "Council votes to reopen library."}',
    ),
    "classification": (
        {
            "kind": "classification",
            "labels": ["billing", "shipping"],
            "synonyms": {"billing": ["payment"], "shipping": ["delivery"]},
        },
        {"text": "I was charged twice for one order."},
        "billing",
        '{"reason": "A double charge is about money.", "answer": "payment"}',
    ),
}


def _matrix_config(kind: str) -> Any:
    import yaml

    raw = yaml.safe_load(MATRIX.read_text())
    task, *_ = TASKS[kind]
    raw.update(task=task, dataset={"path": "x.jsonl"})
    raw["synth"]["prompt"] = {"style": "zero_shot", "max_tokens": 64}
    return parse_config(raw, str(MATRIX))


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_every_teacher_variant_of_the_paper_matrix_gets_rows(tmp_path: Path, kind: str) -> None:
    from potstill.models.base import ChatResponse
    from potstill.synth.stage import label

    config = _matrix_config(kind)
    task = build_task(config.task)
    _, inputs, reference, reply = TASKS[kind]
    records = []
    for i in range(3):
        example = Example(f"e{i}", inputs, reference)
        labelled = label(task, config, example, "train", [ChatResponse(reply)], _Unpriced())
        records.append(labelled.record)
    run = RunFolder(tmp_path / "run")
    write_records(run.synth_dir / "teacher.jsonl", [teacher_row(**r) for r in records])
    write_jsonl(run.data_dir / "train.jsonl", [Example("g", inputs, reference).to_json()])
    for student in config.students:
        found = student_rows(run, config, task, student)
        assert found.rows, (student.name, found.describe())
        if found.source == "teacher" and kind == "classification":
            # The label itself, never the teacher's synonym for it.
            assert all(
                task.parse(r["completion"][0]["content"], "cot").answer == "billing"
                for r in found.rows
            )
            assert all(
                "payment" not in r["completion"][0]["content"].split('"answer"')[-1]
                for r in found.rows
            )


class _Unpriced:
    price = None
