"""One writer per run folder, and a budget that holds: two `potstill run` on one folder, and a
run SIGKILLed with calls in flight, against the fault server (which logs every request it
receives, so what it could bill is counted on its side, not potstill's).

The teacher is priced by completion tokens only and asked for 5 (the fault server reports
5), so a call's worst case is its real cost, $0.005: `budget.max_usd` $0.0625 pays for
exactly 12 of the 70 calls, whatever the order they are sent and answered in.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from fault_server import FaultServer
from review_task import endpoint, reply, reviews

if TYPE_CHECKING:
    from conftest import Tally

POTSTILL = Path(sys.executable).with_name("potstill")
CALL_USD = 5 * 1000.0 / 1e6  # 5 completion tokens at $1,000 per million
MAX_USD = 0.0625  # 12.5 calls


def _config(tmp_path: Path, url: str) -> Path:
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reviews()))
    prices = {"price_per_million_input": 0.0, "price_per_million_output": 1000.0}
    # Calls wait at the gate for as long as the test holds them: no timeout, no retry.
    teacher = endpoint(url, "teacher", timeout_s=600.0, **prices)
    tree = {
        "name": "shared",
        "task": {"kind": "classification", "labels": ["positive", "negative"]},
        "dataset": {"path": str(data), "test_size": 30},
        "teacher": {"model": teacher, "prompt": {"style": "zero_shot", "max_tokens": 5}},
        "budget": {"max_usd": MAX_USD},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    return config


def _spawn(config: Path, runs: Path, log: Path, *extra: str) -> subprocess.Popen[str]:
    command = [str(POTSTILL), "run", str(config), "--runs-dir", str(runs), "--stop-after", "synth"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*command, *extra], stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env
    )


def _wait_until(done: object, what: str, seconds: float = 300) -> None:
    """Poll `done()` until it is true (the machine may be slow; this only bounds a hang)."""
    deadline = time.monotonic() + seconds
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _billed(server: FaultServer) -> float:
    """What the server could bill: every request it received, answered or not."""
    return len(server.log) * CALL_USD


def _ledger_usd(run: Path) -> float:
    with sqlite3.connect(run / "calls.sqlite") as db:
        row = db.execute("SELECT SUM(COALESCE(cost_usd, worst_usd)) FROM spend").fetchone()
    return float(row[0])


@pytest.mark.slow
def test_two_runs_on_one_folder_one_is_refused_and_every_call_is_sent_once(
    tmp_path: Path, tally: Tally
) -> None:
    gate = threading.Event()  # holds the winner's calls until the loser has ended
    server = FaultServer(reply=reply, gate=gate)
    url = server.start()
    runs = tmp_path / "runs"
    try:
        config = _config(tmp_path, url)
        logs = [tmp_path / "first.log", tmp_path / "second.log"]
        procs = [_spawn(config, runs, log) for log in logs]  # at once, on one new folder
        # One run sends at most 8 calls (its concurrency) before the gate opens; two, 16.
        ended = lambda: any(p.poll() is not None for p in procs)  # noqa: E731
        _wait_until(lambda: ended() or len(server.log) > 8, "one run to end")
        assert len(server.log) <= 8, "both runs are sending"
        loser = next(i for i, p in enumerate(procs) if p.poll() is not None)
        winner = procs[1 - loser]
        assert winner.poll() is None  # still holding its calls
        assert procs[loser].returncode == 2
        output = logs[loser].read_text()
        assert "Traceback" not in output
        message = " ".join(output.split())
        assert message.startswith(
            f"error: {runs / 'shared'}: another potstill process is writing this run folder "
            f"(pid {winner.pid} on "
        ), output
        assert "potstill run" in message and "wait until it ends" in message
        gate.set()
        assert winner.wait(timeout=300) == 3, logs[1 - loser].read_text()  # budget reached
        again = _spawn(config, runs, tmp_path / "again.log")  # a resume: nothing fits now
        assert again.wait(timeout=300) == 3, (tmp_path / "again.log").read_text()
    finally:
        gate.set()
        server.stop()
    # Every call was sent once, by one process, and no more were sent than the budget pays.
    assert len(server.log) == 12 and set(server.attempts.values()) == {1}
    assert max(server.answered.values()) == 1 and len(server.answered) == 12
    assert _billed(server) <= MAX_USD
    assert abs(_ledger_usd(runs / "shared") - 12 * CALL_USD) < 1e-9
    errors = [json.loads(line) for line in (runs / "shared/synth/errors.jsonl").open()]
    assert len(errors) == 70 - 12 and {e["status"] for e in errors} == {"not_sent"}
    tally.count("one writer: concurrent runs refused", 1)
    tally.count("one writer: calls sent, of 12 the budget pays", len(server.log))


@pytest.mark.slow
def test_a_sigkilled_run_leaves_no_stuck_lock_and_its_calls_in_flight_count(
    tmp_path: Path, tally: Tally
) -> None:
    gate = threading.Event()  # the first 8 calls are answered; the next 4 stay in flight
    server = FaultServer(reply=reply, gate=gate, gate_after=8)
    url = server.start()
    runs = tmp_path / "runs"
    try:
        config = _config(tmp_path, url)
        first = _spawn(config, runs, tmp_path / "first.log")
        _wait_until(lambda: len(server.log) == 12 or first.poll() is not None, "12 calls")
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=60) == -signal.SIGKILL
        assert (runs / "shared" / "run.lock").exists()  # left behind, with a dead pid
        gate.set()
        # The next run gets the lock (the OS dropped it with the process) and counts the 4
        # calls that were in flight: the budget has no room for another.
        resumed = _spawn(config, runs, tmp_path / "resumed.log")
        assert resumed.wait(timeout=300) == 3, (tmp_path / "resumed.log").read_text()
        assert len(server.log) == 12
        assert _billed(server) <= MAX_USD
        # A bigger budget finishes the run; the 4 calls the killed run lost are sent again.
        bigger = _spawn(config, runs, tmp_path / "bigger.log", "budget.max_usd=1")
        assert bigger.wait(timeout=300) == 0, (tmp_path / "bigger.log").read_text()
    finally:
        gate.set()
        server.stop()
    assert not (runs / "shared" / "run.lock").exists()
    assert len(server.answered) == 70 and len(server.log) == 70 + 4
    assert abs(_ledger_usd(runs / "shared") - len(server.log) * CALL_USD) < 1e-9
    tally.count("one writer: SIGKILLed holders, lock taken again", 1)
