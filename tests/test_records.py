"""Records: what a stage writes is what its reader parses, with a schema version; a file that
is not one (newer, unversioned, a key missing or of the wrong type) is named in one line."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from potstill.errors import DamagedRunFile, UserError
from potstill.models.base import ChatResponse
from potstill.records import (
    ErrorRow,
    NewerRunFile,
    Record,
    call_failure,
    error_row,
    read_record,
    read_records,
    write_record,
    write_records,
)


def test_a_failed_call_becomes_the_same_row_in_synth_and_evaluate() -> None:
    failed = ChatResponse(
        text=None, error="HTTP 500 from the endpoint", error_kind="http_500", attempts=4
    )
    failure = call_failure(failed)
    assert failure == {
        "error": "HTTP 500 from the endpoint",
        "error_kind": "http_500",
        "attempts": 4,
    }
    synth = error_row("ex1", "label", failure, sample=2)
    evaluate = error_row("ex1", "predict", failure, candidate="teacher", transfer_set="rephrased")
    assert synth == ErrorRow(
        id="ex1", phase="label", sample=2, status="http_500",
        reason="HTTP 500 from the endpoint", attempts=4,
    )  # fmt: skip
    where = {"sample", "candidate", "transfer_set"}
    assert evaluate.model_dump(exclude=where) == {
        **synth.model_dump(exclude=where),
        "phase": "predict",
    }
    assert evaluate.candidate == "teacher" and evaluate.transfer_set == "rephrased"


def test_an_answered_call_has_no_failure_and_an_unknown_kind_is_error() -> None:
    assert call_failure(ChatResponse(text="4")) == {}
    row = error_row("g1", "generate", {"error": "boom", "error_kind": None, "attempts": 1})
    assert row.status == "error" and row.reason == "boom"


def test_an_unknown_place_is_refused() -> None:
    with pytest.raises(ValueError, match="place"):
        error_row("g1", "generate", {"error": "boom"}, place="nowhere")


class _Summary(Record):
    VERSION = 2
    name: str
    accuracy: float | None


def test_rows_and_files_round_trip_with_their_version(tmp_path: Path) -> None:
    rows = [error_row("a", "label", {"error": "x", "attempts": 2}, sample=0)]
    write_records(tmp_path / "errors.jsonl", rows)
    line = json.loads((tmp_path / "errors.jsonl").read_text())
    assert line["schema_version"] == ErrorRow.VERSION and line["id"] == "a"
    assert read_records(tmp_path / "errors.jsonl", ErrorRow) == rows
    write_record(tmp_path / "s.json", _Summary(name="x", accuracy=None))
    assert json.loads((tmp_path / "s.json").read_text())["schema_version"] == 2
    assert read_record(tmp_path / "s.json", _Summary) == _Summary(name="x", accuracy=None)


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj) + "\n")
    return path


def test_a_newer_file_says_upgrade_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", {"schema_version": 3, "name": "x", "accuracy": 1.0})
    with pytest.raises(NewerRunFile) as caught:
        read_record(path, _Summary)
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert str(path) in message and "version 3" in message and "upgrade potstill" in message


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ({"name": "x", "accuracy": 1.0}, "no schema_version"),
        ({"schema_version": "2", "name": "x", "accuracy": 1.0}, "not a whole number"),
        ({"schema_version": 2, "accuracy": 1.0}, "key `name`"),
        ({"schema_version": 2, "name": "x", "accuracy": "high"}, "key `accuracy`"),
        ({"schema_version": 2, "name": "x", "accuracy": 1.0, "acc": 1}, "key `acc`"),
    ],
)
def test_a_broken_file_names_itself_and_the_key(tmp_path: Path, content: dict, said: str) -> None:
    path = _write(tmp_path / "s.json", content)
    with pytest.raises(DamagedRunFile) as caught:
        read_record(path, _Summary)
    assert said in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_broken_line_is_named_by_its_number(tmp_path: Path) -> None:
    good = error_row("a", "label", {"error": "x"}).dump()
    path = tmp_path / "errors.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "attempts": "many"}) + "\n")
    with pytest.raises(DamagedRunFile, match=r"errors\.jsonl:3: key `attempts`"):
        read_records(path, ErrorRow)


def test_synth_rows_are_written_with_only_the_keys_set_and_read_back_the_same(
    tmp_path: Path,
) -> None:
    from run_records import teacher_row

    from potstill.records import TeacherRow, read_training_rows, write_training_rows

    voted = teacher_row(
        samples=[
            {"index": 0, "reply": "4", "status": "ok", "answer": "4", "finish_reason": "stop",
             "prompt_tokens": 9, "completion_tokens": 1},
        ],
        votes={"4": 1},
        chosen_sample=0,
    )  # fmt: skip
    plain = teacher_row(id="y", answer="5")
    path = tmp_path / "teacher.jsonl"
    write_records(path, [voted, plain])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert "samples" in lines[0] and "samples" not in lines[1]  # never set: left out, not null
    assert all(line["schema_version"] == TeacherRow.VERSION for line in lines)
    assert read_records(path, TeacherRow) == [voted, plain]
    # Training rows go to the trainers (and the Hub dataset) without the version.
    row = {
        "id": "y",
        "prompt": [{"role": "user", "content": "2 + 3?"}],
        "completion": [{"role": "assistant", "content": "5"}],
    }
    write_training_rows(tmp_path / "train.jsonl", [row])
    assert "schema_version" in (tmp_path / "train.jsonl").read_text()
    assert read_training_rows(tmp_path / "train.jsonl") == [row]
    # A writer's mistake is refused before anything is written.
    with pytest.raises(ValidationError, match=r"completion.0.role"):
        write_training_rows(tmp_path / "broken.jsonl", [{**row, "completion": [{"content": "5"}]}])
    assert not (tmp_path / "broken.jsonl").exists()


def test_the_manifest_keeps_every_stage_and_names_a_newer_one(tmp_path: Path) -> None:
    from potstill.runs import RunFolder

    run = RunFolder(tmp_path / "run")
    assert run.manifest().stages == {} and run.stage_record("synth") is None
    run.mark_done("synth", "abc", 1.234, result={"accepted": 3}, cost_usd=0.5)
    run.mark_incomplete("train", "def", 2.0)
    run.set_data({"pin": "p1"})
    manifest = run.manifest()
    assert manifest.data == {"pin": "p1"} and run.is_done("synth") and not run.is_done("train")
    assert run.is_current("synth", "abc") and not run.is_current("synth", "other")
    synth = manifest.stages["synth"]
    assert (synth.seconds, synth.result, synth.cost_usd) == (1.23, {"accepted": 3}, 0.5)
    data = json.loads(run.manifest_path.read_text())
    run.manifest_path.write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(NewerRunFile, match="schema version 2 of Manifest is newer"):
        run.manifest()
