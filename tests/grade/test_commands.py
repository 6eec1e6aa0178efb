"""`potstill grade RUN`: graders and links, the summary, exports, the pinned sample, storage."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import ConfigError, parse_config
from potstill.grade.rounds import GradingRound, grades_path, open_round
from potstill.runs import RunFolder

POTSTILL = Path(sys.executable).with_name("potstill")


def grade_all(grading: GradingRound, name: str, score: Callable[[str, str], int]) -> None:
    """Grade every pointwise task of a grader through the store, as the app would."""
    grader = grading.store.grader_for(grading.add_grader(name)[0])
    assert grader is not None
    for task in grading.ordered_tasks(grader.grader_id):
        form = grading.store.form(grading.store.issue_form(grader.grader_id, task.task_id, None))
        assert form is not None
        value = score(task.example_id, task.candidate)
        grading.store.record_grade(form, None, {"correctness": value, "format": 4}, "")


def test_add_grader_prints_a_personal_link_and_a_second_call_replaces_it(
    make_run: Callable[..., RunFolder],
) -> None:
    run = make_run({"size": 6, "overlap": 2, "items_per_grader": 4, "modes": ["pointwise"]})
    runner = CliRunner()
    first = runner.invoke(app, ["grade", str(run.root), "--add-grader", "ann", "--port", "9123"])
    assert first.exit_code == 0, first.output
    link = first.output.strip().splitlines()[-1]
    assert link.startswith("http://127.0.0.1:9123/login?token=")
    token = link.split("token=")[1]
    grading = open_round(run, run.load_config())
    grader = grading.store.grader_for(token)
    assert grader is not None and grader.name == "ann"
    assert len(grading.store.assigned_tasks(grader.grader_id)) == 4 * 3
    again = runner.invoke(app, ["grade", str(run.root), "--add-grader", "ann"])
    assert "new link" in again.output
    assert grading.store.grader_for(token) is None  # the old link stops working
    # Tokens are kept only as hashes.
    assert token.encode() not in grades_path(run).read_bytes()


def test_summary_and_exports(make_run: Callable[..., RunFolder], tmp_path: Path) -> None:
    run = make_run({"size": 6, "overlap": 6, "modes": ["pointwise"]})
    runner = CliRunner()
    empty = runner.invoke(app, ["grade", str(run.root), "--summary"])
    assert empty.exit_code == 0 and "No grades yet." in empty.output
    grading = open_round(run, run.load_config())
    grade_all(grading, "ann", lambda e, c: 5 if c == "teacher" else 2)
    grade_all(grading, "bob", lambda e, c: 5 if c == "teacher" else 2 if e < "r06" else 3)
    out = runner.invoke(app, ["grade", str(run.root), "--summary"])
    assert out.exit_code == 0, out.output
    assert "- ann: 18 / 18 graded" in out.output
    assert "| pointwise | Cohen's kappa" in out.output
    assert "| teacher | 4.50 [4.50, 4.50] | 5.00 [5.00, 5.00] | 4.00" in out.output
    for suffix in ("csv", "jsonl"):
        path = tmp_path / f"grades.{suffix}"
        done = runner.invoke(app, ["grade", str(run.root), "--export", str(path)])
        assert done.exit_code == 0 and "36 grades written" in done.output
    rows = [json.loads(line) for line in (tmp_path / "grades.jsonl").read_text().splitlines()]
    assert {(r["grader"], r["mode"]) for r in rows} == {("ann", "pointwise"), ("bob", "pointwise")}
    assert all(r["created_at"] and r["example_id"] and r["candidate"] for r in rows)
    header = (tmp_path / "grades.csv").read_text().splitlines()[0]
    assert header.endswith("score_correctness,score_format")
    bad = runner.invoke(app, ["grade", str(run.root), "--export", str(tmp_path / "g.xlsx")])
    assert bad.exit_code == 2 and ".csv or .jsonl" in bad.output


def test_sample_is_pinned_when_the_config_changes(make_run: Callable[..., RunFolder]) -> None:
    run = make_run({"size": 4, "overlap": 2})
    first = open_round(run, run.load_config())
    sample = first.store.sample()
    assert len(sample) == 4 and not first.notes
    changed = run.load_config().model_copy(
        update={"grade": run.load_config().grade.model_copy(update={"size": 8, "seed": 5})}
    )
    again = open_round(run, changed)
    assert again.store.sample() == sample
    assert again.config.size == 4 and "earlier grade settings" in again.notes[0]


def test_storage_is_wal_and_a_run_without_predictions_is_a_clear_error(
    make_run: Callable[..., RunFolder], tmp_path: Path
) -> None:
    run = make_run({"size": 4, "overlap": 2})
    open_round(run, run.load_config())
    with sqlite3.connect(grades_path(run)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for path in (run.eval_dir / "predictions").glob("*.jsonl"):
        path.unlink()
    result = CliRunner().invoke(app, ["grade", str(run.root), "--summary"])
    assert result.exit_code == 2
    assert "no predictions; run `potstill evaluate" in result.output


def test_grade_config_checks_its_numbers() -> None:
    tree = {"name": "t", "task": {"kind": "math"}, "dataset": {"path": "x.jsonl"}}
    assert parse_config(tree, "t").grade.modes == ["pointwise", "pairwise"]
    with pytest.raises(ConfigError, match=r"overlap \(30\) exceeds size \(10\)"):
        parse_config({**tree, "grade": {"size": 10, "overlap": 30}}, "t")
    with pytest.raises(ConfigError, match=r"grade\.modes\.0"):
        parse_config({**tree, "grade": {"modes": ["ranking"]}}, "t")


def test_a_start_that_cannot_bind_its_port_changes_nothing_of_the_running_server(
    make_run: Callable[..., RunFolder],
) -> None:
    run = make_run({"size": 6, "overlap": 2, "items_per_grader": 4, "modes": ["pointwise"]})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    # The first server: the installed command, as a grading host runs it.
    first = subprocess.Popen(
        [str(POTSTILL), "grade", str(run.root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stdout is not None
        admin = first.stdout.readline().strip()  # the admin link is its only stdout line
        assert admin.startswith(f"http://127.0.0.1:{port}/login?token="), admin
        deadline = time.monotonic() + 30
        while True:
            try:
                login = httpx.get(admin, follow_redirects=False, timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.1)
        assert login.status_code == 303 and login.headers["location"] == "/admin"
        with sqlite3.connect(grades_path(run)) as db:
            stored = db.execute("SELECT value FROM meta WHERE key = 'admin_token_hash'").fetchone()

        # A second start on the same port: one message, exit 2, and nothing changed.
        second = CliRunner().invoke(app, ["grade", str(run.root), "--port", str(port)])
        assert second.exit_code == 2, second.output
        assert second.output.startswith("error: cannot listen on http://127.0.0.1:")
        assert "its admin link still works" in second.output
        with sqlite3.connect(grades_path(run)) as db:
            now = db.execute("SELECT value FROM meta WHERE key = 'admin_token_hash'").fetchone()
        assert now == stored
        # The running server's admin link still signs its admin in.
        with httpx.Client(follow_redirects=True, timeout=5) as client:
            page = client.get(admin)
        assert page.status_code == 200 and page.url.path == "/admin"
    finally:
        first.terminate()
        first.wait(timeout=10)
        if first.stdout is not None:
            first.stdout.close()
