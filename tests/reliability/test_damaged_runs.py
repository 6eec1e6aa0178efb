"""Damaged run files and other inputs that used to end in a traceback.

One real run folder (synth, train, evaluate, report and a grader, with the review teacher and
the tiny student) is built once; each case damages a copy of it, or runs a command with a bad
option, and must end with exit code 2 (or 3: retry) and one `error:` message naming the file
(and line) and what to do; a damaged file changes nothing in the run folder. Each case is
counted in the session's tally of bad inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from conftest import review_teacher
from fault_server import FaultServer
from review_task import REVIEWS
from typer.testing import CliRunner

from potstill.cli import app

if TYPE_CHECKING:
    from conftest import Tally


def potstill(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def _config_tree(data: Path, teacher_url: str, student: Path) -> dict[str, Any]:
    return {
        "name": "damaged",
        "task": {
            "kind": "classification",
            "labels": ["positive", "negative"],
            "synonyms": {"positive": ["good"], "negative": ["bad"]},
        },
        "dataset": {"path": str(data), "test_size": 4},
        "teacher": {
            "model": {"backend": "openai", "model": "fake-405b", "base_url": teacher_url},
            "prompt": {"style": "cot"},
        },
        "students": [
            {
                "name": "distilled",
                "base": {"model": str(student)},
                "train": {"epochs": 1, "batch_size": 4},
            }
        ],
        "synth": {"prompt": {"max_tokens": 4}},
        "evaluate": {"bootstrap_samples": 100, "teacher_zero_shot": False},
        "judge": {"enabled": False},
    }


def _write_data(folder: Path) -> Path:
    data = folder / "reviews.jsonl"
    rows = [{"text": text, "label": label} for text, label in REVIEWS.items()]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


@pytest.fixture(scope="module")
def teacher() -> Iterator[FaultServer]:
    found = review_teacher()
    found.start()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory, teacher: FaultServer, tiny_model_dir: Path
) -> Path:
    """A whole run (every stage, a grader added), built once for the module."""
    folder = tmp_path_factory.mktemp("damaged-source")
    config = folder / "run.yaml"
    config.write_text(
        yaml.safe_dump(_config_tree(_write_data(folder), teacher.url, tiny_model_dir))
    )
    done = potstill("run", config, "--runs-dir", folder / "runs")
    assert done.exit_code == 0, done.output[-3000:]
    run = folder / "runs" / "damaged"
    added = potstill("grade", run, "--add-grader", "ann")
    assert added.exit_code == 0, added.output[-3000:]
    assert (run / "grades.sqlite").exists() and (run / "calls.sqlite").exists()
    return run


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_message(tally: Tally, result: Any, kind: str, expect: Sequence[str], code: int = 2) -> str:
    """Exit `code`, no traceback, exactly one `error:` / `incomplete:` line holding every
    fragment in `expect`; returns that message."""
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    tally.record(kind, escaped)
    if escaped and result.exc_info is not None:
        shown = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"a traceback instead of a message for {kind}:\n{shown[-4000:]}")
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output[-3000:]
    lead = "error:" if code == 2 else "incomplete:"
    lines = " ".join(result.output.split()).split(lead)  # unwrapped, as one line
    assert len(lines) == 2, result.output[-3000:]
    message = lead + lines[1]
    for fragment in expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _halve(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _break_line(line: int) -> Callable[[Path], None]:
    def spoil(path: Path) -> None:
        lines = path.read_text().splitlines(keepends=True)
        lines[line - 1] = lines[line - 1][: len(lines[line - 1]) // 2] + "\n"
        path.write_text("".join(lines))

    return spoil


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"id": "caf\xe9"}\n')


def _a_list(path: Path) -> None:
    path.write_text("[1, 2, 3]\n")


def _newer_schema(path: Path) -> None:
    """A JSON (or each line of a JSONL) file that a newer potstill wrote, with a schema this one
    does not read."""

    def newer(data: dict[str, Any]) -> str:
        return json.dumps({**data, "schema_version": data["schema_version"] + 1})

    if path.suffix == ".jsonl":
        lines = [newer(json.loads(line)) for line in path.read_text().splitlines()]
        path.write_text("".join(line + "\n" for line in lines))
    else:
        path.write_text(newer(json.loads(path.read_text())))


def _without(key: str) -> Callable[[Path], None]:
    """A JSON file whose object has lost `key` (valid JSON, not the record)."""

    def spoil(path: Path) -> None:
        data = json.loads(path.read_text())
        del data[key]
        path.write_text(json.dumps(data))

    return spoil


def _mistyped_line(line: int, key: str) -> Callable[[Path], None]:
    """A JSONL file whose line `line` has `key` of the wrong type (valid JSON)."""

    def spoil(path: Path) -> None:
        lines = path.read_text().splitlines(keepends=True)
        lines[line - 1] = json.dumps({**json.loads(lines[line - 1]), key: [1, 2]}) + "\n"
        path.write_text("".join(lines))

    return spoil


def _row_without_inputs(path: Path) -> None:
    """Valid JSON, the wrong shape: the second example has lost its inputs."""
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = json.dumps({"id": json.loads(lines[1])["id"]}) + "\n"
    path.write_text("".join(lines))


def _corrupt_pages(path: Path) -> None:
    """A valid SQLite header over pages of noise (disk damage, a bad copy)."""
    data = bytearray(path.read_bytes())
    assert len(data) > 4096 * 2
    data[4096:] = os.urandom(len(data) - 4096)
    path.write_bytes(bytes(data))


# name -> (the file, how it is damaged, the command (RUN is the run folder), what the message
# must say besides the file)
CASES: dict[str, tuple[str, Callable[[Path], None], list[str], list[str]]] = {
    "calls.sqlite: not a database": (
        "calls.sqlite",
        _garbage,
        ["synth", "RUN"],
        ["file is not a database", "delete it", "paid for, again"],
    ),
    "calls.sqlite: damaged pages": (
        "calls.sqlite",
        _corrupt_pages,
        ["synth", "RUN"],
        ["SQLite cannot read it", "delete it"],
    ),
    "grades.sqlite: not a database (grade)": (
        "grades.sqlite",
        _garbage,
        ["grade", "RUN", "--summary"],
        ["file is not a database", "restore it from a backup, or delete it"],
    ),
    "grades.sqlite: not a database (report)": (
        "grades.sqlite",
        _garbage,
        ["report", "RUN"],
        ["file is not a database", "restore it from a backup, or delete it"],
    ),
    "manifest.json: cut short": (
        "manifest.json",
        _halve,
        ["report", "RUN"],
        ["not JSON", "delete it and run `potstill run` again"],
    ),
    "manifest.json: not an object": (
        "manifest.json",
        _a_list,
        ["synth", "RUN"],
        ["not a JSON object", "delete it and run `potstill run` again"],
    ),
    "synth/train.jsonl: a broken line": (
        "synth/train.jsonl",
        _break_line(2),
        ["train", "RUN"],
        [":2: not a line of JSON", "run `potstill synth "],
    ),
    "manifest.json: written by a newer potstill": (
        "manifest.json",
        _newer_schema,
        ["report", "RUN"],
        ["schema version 2 of Manifest is newer than this potstill reads (1)", "upgrade"],
    ),
    "synth/train.jsonl: a line that is not a TrainingRow": (
        "synth/train.jsonl",
        _mistyped_line(1, "id"),
        ["train", "RUN"],
        [":1: key `id`", "TrainingRow record", "run `potstill synth "],
    ),
    "synth/summary.json: a key missing": (
        "synth/summary.json",
        _without("accepted"),
        ["report", "RUN"],
        ["key `accepted`: Field required (a SynthSummary record)", "run `potstill synth "],
    ),
    "students/distilled/summary.json: a key missing": (
        "students/distilled/summary.json",
        _without("rows"),
        ["report", "RUN"],
        ["key `rows`: Field required (a TrainSummary record)", "run `potstill train "],
    ),
    "students/distilled/train_log.jsonl: written by a newer potstill": (
        "students/distilled/train_log.jsonl",
        _newer_schema,
        ["report", "RUN"],
        ["schema version 2 of TrainLogEntry is newer than this potstill reads (1)", "upgrade"],
    ),
    "synth/summary.json: not UTF-8": (
        "synth/summary.json",
        _not_utf8,
        ["report", "RUN"],
        ["not UTF-8 text", "run `potstill synth "],
    ),
    "data/test.jsonl: a broken line": (
        "data/test.jsonl",
        _break_line(3),
        ["evaluate", "RUN"],
        [":3: not a line of JSON", "delete the folder", "/data and run the same `potstill run`"],
    ),
    "data/test.jsonl: a row without inputs": (
        "data/test.jsonl",
        _row_without_inputs,
        ["evaluate", "RUN"],
        ["row 2 is not an example (no 'inputs')", "delete the folder"],
    ),
    "eval/predictions/teacher.jsonl: not objects": (
        "eval/predictions/teacher.jsonl",
        _a_list,
        ["report", "RUN"],
        [":1: not a JSON object", "run `potstill evaluate "],
    ),
    "eval/predictions/teacher.jsonl: a line that is not a Prediction": (
        "eval/predictions/teacher.jsonl",
        _mistyped_line(2, "status"),
        ["report", "RUN"],
        [":2: key `status`", "Prediction record", "run `potstill evaluate "],
    ),
    "eval/scores.json: written by a newer potstill": (
        "eval/scores.json",
        _newer_schema,
        ["report", "RUN"],
        ["schema version 2 of Scores is newer than this potstill reads (1)", "upgrade potstill"],
    ),
    "eval/scores.json: a key missing": (
        "eval/scores.json",
        _without("comparisons"),
        ["report", "RUN"],
        ["key `comparisons`: Field required (a Scores record)", "run `potstill evaluate "],
    ),
    "eval/scores.json: cut short": (
        "eval/scores.json",
        _halve,
        ["report", "RUN"],
        ["not JSON", "run `potstill evaluate "],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_damaged_run_file_is_named_with_what_to_do(
    finished_run: Path, tmp_path: Path, tally: Tally, case: str
) -> None:
    name, spoil, command, expect = CASES[case]
    run = tmp_path / "damaged"
    shutil.copytree(finished_run, run)
    spoil(run / name)
    before = _snapshot(run)
    args = [str(run) if a == "RUN" else a for a in command]
    message = one_message(tally, potstill(*args), f"damaged run file: {name}", expect)
    assert f"{run / name}" in message, message
    assert _snapshot(run) == before, "a damaged file changed the run folder"


@pytest.mark.slow
def test_a_damaged_run_file_is_named_through_the_run_command(
    finished_run: Path, tmp_path: Path, tally: Tally
) -> None:
    """`potstill run CONFIG` on a run whose manifest or pinned split is damaged."""
    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / "damaged")
    config = runs / "damaged" / "config.yaml"
    for name, spoil, fragment in (
        ("data/train.jsonl", _break_line(1), ":1: not a line of JSON"),
        ("manifest.json", _halve, "manifest.json: not JSON"),
    ):
        target = runs / "damaged" / name
        saved = target.read_bytes()
        spoil(target)
        result = potstill("run", config, "--runs-dir", runs)
        one_message(tally, result, f"damaged run file: {name}", [str(target), fragment])
        target.write_bytes(saved)
    # Whole again: the run is up to date and nothing is sent again.
    assert potstill("run", config, "--runs-dir", runs).exit_code == 0


@pytest.mark.slow
def test_the_remedy_in_the_message_works(
    finished_run: Path, tmp_path: Path, tally: Tally, teacher: FaultServer
) -> None:
    """Do what the messages say: re-run synth over a damaged synth/train.jsonl, delete a
    damaged calls.sqlite; the run goes on."""
    run = tmp_path / "damaged"
    shutil.copytree(finished_run, run)
    _break_line(1)(run / "synth" / "train.jsonl")
    one_message(tally, potstill("train", run), "damaged run file: remedy", ["potstill synth"])
    asked = sum(teacher.answered.values())
    assert potstill("synth", run).exit_code == 0
    assert sum(teacher.answered.values()) == asked  # every answer came from calls.sqlite
    _garbage(run / "calls.sqlite")
    one_message(tally, potstill("synth", run), "damaged run file: remedy", ["delete it"])
    (run / "calls.sqlite").unlink()
    assert potstill("synth", run).exit_code == 0
    with sqlite3.connect(run / "calls.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] > 0


# -- other inputs that used to end in a traceback -------------------------------------------


def _small_config(folder: Path, teacher_url: str, **task: Any) -> Path:
    tree = _config_tree(_write_data(folder), teacher_url, Path("never-loaded"))
    tree["task"].update(task)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_teacher_whose_every_reply_is_rejected_is_one_message(
    tmp_path: Path, tally: Tally, teacher: FaultServer
) -> None:
    # Before: RuntimeError: synth: the teacher produced no usable training row.
    # The teacher says good / bad, which without the synonyms are not labels.
    config = _small_config(tmp_path, teacher.url, synonyms={})
    result = potstill("run", config, "--runs-dir", tmp_path / "runs", "--stop-after", "synth")
    expect = [
        "synth: the teacher gave no usable training row for any of the 8 inputs",
        "(8 teacher calls; rejected: 8 no_answer)",
        str(tmp_path / "runs" / "damaged" / "synth" / "rejected.jsonl"),
        "teacher.prompt",
    ]
    one_message(tally, result, "teacher: every reply rejected", expect)
    manifest = json.loads((tmp_path / "runs" / "damaged" / "manifest.json").read_text())
    assert "synth" not in manifest["stages"]  # not done: the next run tries it again


def test_a_teacher_whose_every_call_failed_is_incomplete(
    tmp_path: Path, tally: Tally, fake_teacher: Callable[..., FaultServer]
) -> None:
    """Every call failing, with max_failed_fraction allowing it: exit 3, retry."""
    failing = fake_teacher(script=lambda key, attempt: "500")
    config = _small_config(tmp_path, failing.url)
    overrides = ["synth.max_failed_fraction=1", "teacher.model.max_retries=0"]
    result = potstill(
        "run", config, *overrides, "--runs-dir", tmp_path / "runs", "--stop-after", "synth"
    )
    one_message(tally, result, "teacher: every call failed", ["8 call_failed", "again"], code=3)


def test_runs_dir_naming_a_file_is_one_message(
    tmp_path: Path, tally: Tally, teacher: FaultServer
) -> None:
    # Before: NotADirectoryError.
    config = _small_config(tmp_path, teacher.url)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    result = potstill("run", config, "--runs-dir", a_file)  # checked at the option
    tally.record("--runs-dir: a file", result.exception is not None and result.exit_code != 2)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--runs-dir'" in result.output and "is a file" in result.output
    # A file further down, where the run's own folder would go: one message too.
    (a_file.parent / "runs").mkdir()
    (a_file.parent / "runs" / "damaged").write_text("x")
    result = potstill("run", config, "--runs-dir", a_file.parent / "runs")
    expect = ["a file stands where a folder must be", str(a_file.parent / "runs" / "damaged")]
    one_message(tally, result, "--runs-dir: a file", expect)


@pytest.mark.parametrize("command", ["grade", "serve"])
@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_refused_at_the_option(
    tmp_path: Path, tally: Tally, command: str, port: str
) -> None:
    # Before: OverflowError from bind() for `potstill grade RUN --port 99999`.
    target = str(tmp_path) if command == "grade" else "packaged:never-loaded"
    result = potstill(command, target, "--port", port)
    tally.record(
        f"{command} --port out of range", result.exception is not None and result.exit_code != 2
    )
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "Invalid value for '--port'" in result.output
