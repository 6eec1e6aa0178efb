"""A run folder on a small real disk (tmpfs) that fills up, then turns read-only, driven through
the installed `potstill` command: each failure is one message naming the file, exit code 2, no
traceback; every file written before stays whole, and the run goes on once there is room."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from fault_server import FaultServer
from review_task import REVIEWS

from potstill.config import load_config

if TYPE_CHECKING:
    from conftest import SmallDisk, Tally

POTSTILL = Path(sys.executable).with_name("potstill")


class _Teacher:
    """A labelling teacher on the fault server (no faults) that fills the disk when it gets
    request number `fill_at`."""

    def __init__(self, disk: SmallDisk) -> None:
        self.disk = disk
        self.requests = 0
        self.fill_at: int | None = None
        self.server = FaultServer(reply=self.reply)

    def reply(self, body: dict[str, Any]) -> str:
        self.requests += 1
        if self.requests == self.fill_at:
            self.disk.fill()
        label = REVIEWS.get(body["messages"][-1]["content"], "positive")
        return json.dumps({"reason": "the reviewer's words", "answer": label})


def _potstill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(POTSTILL), *args], capture_output=True, text=True, timeout=300)


def _refused(done: subprocess.CompletedProcess[str], *expect: str) -> str:
    """Exit code 2, no traceback, one `error:` message (the last thing printed)."""
    output = done.stderr + done.stdout
    assert "Traceback" not in output, output[-4000:]
    assert done.returncode == 2, output[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    message = done.stderr[done.stderr.index("error:") :]
    for fragment in expect:
        assert fragment in message, message
    return message


def _all_readable(run: Path) -> dict[str, str]:
    """Every file parses whole (no torn JSON or JSONL line, a sound SQLite file); no temp
    files are left; returns each file's hash."""
    assert load_config(run / "config.yaml").name == run.name
    for path in run.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                assert line.endswith("\n")
                json.loads(line)
        elif path.suffix == ".sqlite":
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _calls(run: Path) -> int:
    with closing(sqlite3.connect(f"file:{run / 'calls.sqlite'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


@pytest.mark.slow
def test_a_full_then_read_only_disk_loses_nothing_and_the_run_goes_on(
    small_disk: SmallDisk, tmp_path: Path, tally: Tally
) -> None:
    api = _Teacher(small_disk)
    url = api.server.start()
    try:
        _full_then_read_only(api, url, small_disk, tmp_path, tally)
    finally:
        api.server.stop()


def _full_then_read_only(
    api: _Teacher, url: str, small_disk: SmallDisk, tmp_path: Path, tally: Tally
) -> None:
    data = tmp_path / "reviews.csv"
    data.write_text("review,label\n" + "".join(f'"{t}",{label}\n' for t, label in REVIEWS.items()))
    config = tmp_path / "run.yaml"
    tree = {
        "name": "disk",
        "task": {"kind": "classification", "labels": ["positive", "negative"]},
        "dataset": {
            "path": str(data),
            "fields": {"text": "review", "answer": "label"},
            "test_size": 4,
        },
        # one call at a time: calls.sqlite commits every 4 answers
        "teacher": {"model": {"backend": "openai", "model": "t", "base_url": url}},
    }
    tree["teacher"]["model"] |= {"max_concurrency": 1, "max_retries": 0}
    config.write_text(yaml.safe_dump(tree))
    runs = small_disk.root / "runs"
    run = runs / "disk"

    # 1. A full disk before the run starts: nothing is half-written.
    small_disk.fill()
    done = _potstill("run", str(config), "--runs-dir", str(runs))
    _refused(done, f"{run / 'config.yaml'}: No space left on device", "free some space")
    assert [p for p in runs.rglob("*") if p.is_file()] == []
    tally.count("disk: refusals, full before the run")
    small_disk.free()

    # 2. The disk fills while the teacher answers: the second chunk cannot be committed.
    api.fill_at = 5
    done = _potstill("run", str(config), "--runs-dir", str(runs))
    _refused(done, f"{run / 'calls.sqlite'}: database or disk is full", "run the same command")
    files = _all_readable(run)
    tally.count("disk: refusals, full during synth")
    tally.count("disk: files whole after a full disk", len(files))
    assert {"config.yaml", "manifest.json", "data/train.jsonl", "data/test.jsonl"} <= set(files)
    kept = _calls(run)
    assert kept == 4  # the first chunk, committed before the disk filled
    assert "synth" not in json.loads((run / "manifest.json").read_text())["stages"]

    # 3. Room again: the stage goes on and asks only for what was not stored.
    small_disk.free()
    asked = api.requests
    done = _potstill("synth", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert api.requests - asked == 4 and _calls(run) == 8
    tally.count("disk: calls kept through the full disk", kept)
    tally.count("disk: calls asked again (the chunk lost)", api.requests - asked)
    teacher = [
        json.loads(line)
        for line in (run / "synth" / "teacher.jsonl").read_text().split("\n")
        if line
    ]
    assert len({row["id"] for row in teacher}) == len(teacher) == 8
    assert all(row["rejected"] is None for row in teacher)

    # 4. A read-only run folder: a clear error, and every file exactly as it was.
    before = _all_readable(run)
    small_disk.read_only()
    try:
        done = _potstill("synth", str(run))
        _refused(done, str(run), "make it writable")
        changed = "teacher.prompt.max_tokens=20"  # synth is stale: the config must be saved
        done = _potstill("run", str(config), changed, "--runs-dir", str(runs))
        _refused(done, f"{run / 'config.yaml'}: Read-only file system")
        assert _all_readable(run) == before
        tally.count("disk: refusals, read-only run folder", 2)
        tally.count("disk: files unchanged in the read-only folder", len(before))
    finally:
        small_disk.read_only(False)
