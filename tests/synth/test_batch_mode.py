"""The teacher in batch mode (`teacher.model.mode: batch`) against the Batch API stand-in
(tests/batch_api.py): the same synth/train.jsonl as an online run on the same answers, at
batch prices; partial failures, an expired batch, bad output lines and a failed batch; and a
run SIGKILLed while it polls, which re-attaches instead of sending anything twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from batch_api import BatchAPI
from typer.testing import CliRunner

from potstill.cli import app
from potstill.records import SynthSummary, read_record
from potstill.report.stage import _cost
from potstill.runs import RunFolder

POSITIVE = ("great", "lovely", "superb", "fine")
ONLINE = {"price_per_million_input": 3.0, "price_per_million_output": 15.0}
BATCH_PRICES = {"price_per_million_input": 1.5, "price_per_million_output": 7.5}


def reply(body: dict[str, Any]) -> str:
    """A teacher that labels the reviews right, as cot JSON."""
    text = body["messages"][-1]["content"]
    label = "good" if any(w in text for w in POSITIVE) else "bad"
    return json.dumps({"reason": f"It says {text.split()[-1]}", "answer": label})


def batch_model(**settings: Any) -> dict[str, Any]:
    return {
        **ONLINE,
        "mode": "batch",
        "batch": {**BATCH_PRICES, "poll_interval_s": 0.02, **settings},
    }


@pytest.fixture
def stand_in(start_server: Callable[[Any], str]) -> Callable[[], BatchAPI]:
    def make() -> BatchAPI:
        api = BatchAPI(reply=reply)
        api.base_url = start_server(api.app)
        return api

    return make


def synth(run: RunFolder) -> Any:
    return CliRunner().invoke(app, ["synth", str(run.root)])


def summary(run: RunFolder) -> dict[str, Any]:
    return json.loads((run.synth_dir / "summary.json").read_text())


def test_batch_mode_gives_the_online_runs_rows_at_batch_prices(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder]
) -> None:
    online_api, batch_api = stand_in(), stand_in()
    online = review_run(online_api.base_url, "online", model=ONLINE)
    assert synth(online).exit_code == 0
    # Three lines fail with a server error in the first batch: sent again in a smaller one.
    failing: set[str] = set()

    def status(key: str, sent: int) -> int | None:
        if sent == 1 and (key in failing or len(failing) < 3):
            failing.add(key)
            return 500
        return None

    batch_api.line_status = status
    # Two batches of at most 8 requests each, and the retry batch.
    batched = review_run(batch_api.base_url, "batch", model=batch_model(max_requests_per_file=12))
    result = synth(batched)
    assert result.exit_code == 0, result.output
    train = (batched.synth_dir / "train.jsonl").read_bytes()
    assert train == (online.synth_dir / "train.jsonl").read_bytes() and train
    assert online_api.online and not batch_api.online  # no online call in batch mode
    assert len(batch_api.batches) == 3  # 20 requests in parts of 12 and 8, then the 3 again
    assert sorted(batch_api.twice()) == sorted(failing)
    assert "batch batch_1: completed with 9 of 12 request(s) answered" in result.output

    # The run's own cost figures: the same tokens, at half the price.
    online_cost, batch_cost = summary(online)["cost"], summary(batched)["cost"]
    assert batch_cost["mode"] == "batch" and online_cost["mode"] == "online"
    for tokens in ("calls", "prompt_tokens", "completion_tokens"):
        assert batch_cost[tokens] == online_cost[tokens]
    assert batch_cost["usd"] == pytest.approx(online_cost["usd"] / 2, abs=2e-6)
    assert "at batch prices" in (batched.synth_dir / "card.md").read_text()
    # The report's line for the teacher's bill, from the same summaries.
    assert _cost(read_record(batched.synth_dir / "summary.json", SynthSummary)).endswith(
        " tokens, at batch prices)"
    )
    assert "batch" not in _cost(read_record(online.synth_dir / "summary.json", SynthSummary))
    tokens = f"{batch_cost['prompt_tokens']} + {batch_cost['completion_tokens']} tokens"
    print(
        f"synth cost of {batch_cost['calls']} calls ({tokens}): online "
        f"${online_cost['usd']:.6f}, batch ${batch_cost['usd']:.6f}"
    )
    state = json.loads((batched.synth_dir / "batches.json").read_text())
    assert [b["batch_id"] for b in state["batches"]] == ["batch_1", "batch_2", "batch_3"]
    assert all(b["input_file_id"] for b in state["batches"])


def test_the_dry_run_uses_the_batch_prices(
    review_run: Callable[..., RunFolder],
) -> None:
    from potstill.pipeline import estimate_synth

    online = review_run("http://127.0.0.1:9/v1", "online-estimate", model=ONLINE)
    batched = review_run("http://127.0.0.1:9/v1", "batch-estimate", model=batch_model())
    online_usd = estimate_synth(online, online.load_config())["phases"][-1]["usd"]
    batch_usd = estimate_synth(batched, batched.load_config())["phases"][-1]["usd"]
    assert online_usd > 0 and batch_usd == pytest.approx(online_usd / 2)


def test_an_expired_batch_and_bad_output_lines_are_sent_again_in_a_smaller_batch(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder]
) -> None:
    api = stand_in()
    api.expire, api.expire_answers, api.bad_lines = 1, 5, 2
    run = review_run(api.base_url, "expired", model=batch_model())
    result = synth(run)
    assert result.exit_code == 0, result.output
    assert "batch batch_1: expired with 3 of 20 request(s) answered" in result.output
    assert "line 1 of the output file is no batch result" in result.output
    assert len(api.batches) == 2 and len(api.twice()) == 17
    assert summary(run)["failed_calls"] == 0 and summary(run)["accepted"] == 20


def test_the_budget_holds_back_requests_before_their_batch_is_uploaded(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder]
) -> None:
    api = stand_in()
    run = review_run(api.base_url, "budget", model=batch_model(), budget={"max_usd": 0.0015})
    assert synth(run).exit_code == 3  # the rest are held back: a later run with more budget
    errors = [json.loads(line) for line in (run.synth_dir / "errors.jsonl").open()]
    held = [e for e in errors if e["status"] == "not_sent"]
    assert held and len(errors) == len(held)
    assert 0 < len(api.sent) == 20 - len(held) and api.twice() == []
    assert summary(run)["cost"]["usd"] <= 0.0015


def test_lines_still_failing_after_the_retry_rounds_are_failed_calls_the_next_run_sends(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder]
) -> None:
    api = stand_in()
    failing: set[str] = set()

    def status(key: str, sent: int) -> int | None:
        if sent == 1 and (key in failing or len(failing) < 4):
            failing.add(key)
            return 503
        return None

    api.line_status = status
    run = review_run(api.base_url, "rounds", model=batch_model(retry_rounds=0))
    result = synth(run)
    assert result.exit_code == 3, result.output
    errors = [json.loads(line) for line in (run.synth_dir / "errors.jsonl").open()]
    assert len(errors) == 4 and {e["status"] for e in errors} == {"http_503"}
    assert len(api.batches) == 1
    assert synth(run).exit_code == 0  # the next run sends them in a new batch
    assert len(api.batches) == 2 and len(api.twice()) == len(errors)


def test_a_failed_batch_stops_the_stage_with_what_to_do(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder]
) -> None:
    api = stand_in()
    api.fail = 1
    run = review_run(api.base_url, "failed", model=batch_model())
    result = synth(run)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "error: the endpoint failed batch batch_1 (20 request(s)) without running it" in message
    assert "invalid_request (line 1): bad model" in message
    assert f"potstill synth {run.root}" in message and "Traceback" not in result.output
    assert synth(run).exit_code == 0
    assert len(api.batches) == 2 and summary(run)["accepted"] == 20


def forget_answers(run: RunFolder) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run.calls_db}{suffix}").unlink(missing_ok=True)


def test_a_recorded_batch_is_read_again_for_free_or_sent_again_once_the_endpoint_lost_it(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder]
) -> None:
    api = stand_in()
    run = review_run(api.base_url, "again", model=batch_model())
    assert synth(run).exit_code == 0
    train = (run.synth_dir / "train.jsonl").read_bytes()
    forget_answers(run)  # the answers are lost: the recorded batch still has them
    result = synth(run)
    assert result.exit_code == 0 and "batch batch_1: re-attached" in result.output
    assert len(api.batches) == 1 and api.twice() == []
    assert (run.synth_dir / "train.jsonl").read_bytes() == train
    forget_answers(run)
    api.gone.add("batch_1")  # and now the endpoint no longer has it either
    result = synth(run)
    assert result.exit_code == 0, result.output
    assert "batch batch_1: gone with 0 of 20 request(s) answered" in result.output
    assert len(api.batches) == 2 and len(api.twice()) == 20
    assert (run.synth_dir / "train.jsonl").read_bytes() == train


def spawn_synth(run: RunFolder, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    command = [sys.executable, "-c", "from potstill.cli import main; main()", "synth"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a killed run's lines are in the log
    return subprocess.Popen([*command, str(run.root)], stdout=handle, stderr=handle, env=env)


def polling(api: BatchAPI, run: RunFolder, proc: subprocess.Popen[bytes], log: Path) -> str:
    """Wait until the run has recorded its batch and looked at it twice more; its id."""
    looks = sum(api.looks.values())
    state = run.synth_dir / "batches.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if state.exists():
            ids = [b["batch_id"] for b in json.loads(state.read_text())["batches"]]
            if ids and ids[-1] and sum(api.looks.values()) >= looks + 2:
                return str(ids[-1])
        time.sleep(0.02)
    raise AssertionError(f"the run never polled a recorded batch:\n{log.read_text()[-3000:]}")


def ledger_spent(calls_db: Path) -> float:
    with sqlite3.connect(calls_db) as db:
        return float(
            db.execute("SELECT SUM(COALESCE(cost_usd, worst_usd)) FROM spend").fetchone()[0]
        )


@pytest.mark.slow
def test_a_run_killed_while_polling_re_attaches_and_sends_nothing_twice(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder], tmp_path: Path
) -> None:
    online_api, api = stand_in(), stand_in()
    online = review_run(online_api.base_url, "online", model=ONLINE)
    assert synth(online).exit_code == 0
    api.held = True
    run = review_run(api.base_url, "killed", model=batch_model(), budget={"max_usd": 1.0})
    log = tmp_path / "synth.log"
    for _ in range(2):  # killed while it polls; then while the re-attached run polls
        proc = spawn_synth(run, log)
        assert polling(api, run, proc, log) == "batch_1"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    assert len(api.batches) == 1 and sum(api.sent.values()) == 20
    # A run killed between making the batch and writing its id finds it by its input file.
    state_path = run.synth_dir / "batches.json"
    state = json.loads(state_path.read_text())
    state["batches"][0]["batch_id"] = None
    state_path.write_text(json.dumps(state))
    api.held = False
    assert spawn_synth(run, log).wait(timeout=120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count("batch batch_1: re-attached") == 2, text  # by its id; by its file
    assert len(api.batches) == 1 and api.twice() == [] and sum(api.sent.values()) == 20
    train = (run.synth_dir / "train.jsonl").read_bytes()
    assert train == (online.synth_dir / "train.jsonl").read_bytes()
    # The killed runs' reservations became the batch's real cost: nothing counted twice.
    cost = summary(run)["cost"]
    assert cost["usd"] == pytest.approx(summary(online)["cost"]["usd"] / 2, abs=2e-6)
    assert ledger_spent(run.calls_db) == pytest.approx(cost["usd"], abs=2e-6)


def test_batches_run_by_vllm_run_batch_in_a_folder_give_the_online_rows(
    stand_in: Callable[[], BatchAPI], review_run: Callable[..., RunFolder], tmp_path: Path
) -> None:
    online_api = stand_in()
    online = review_run(online_api.base_url, "online", model=ONLINE)
    assert synth(online).exit_code == 0
    run = review_run(online_api.base_url, "offline", model=batch_model(folder="vllm"))
    log = tmp_path / "synth.log"
    proc = spawn_synth(run, log)
    deadline = time.monotonic() + 120
    while not list((run.root / "vllm").glob("*.input.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    (source,) = (run.root / "vllm").glob("*.input.jsonl")
    # What `vllm run-batch -i SOURCE -o OUTPUT` writes: one result line per request line.
    results = []
    for n, line in enumerate(json.loads(raw) for raw in source.read_text().splitlines()):
        body = BatchAPI(reply=reply).answer(line["body"])
        response = {"status_code": 200, "request_id": f"vllm-batch-{n}", "body": body}
        results.append({"id": f"vllm-{n}", "custom_id": line["custom_id"], "response": response})
    output = source.with_name(source.name.replace(".input.", ".output."))
    output.write_text("".join(json.dumps({**r, "error": None}) + "\n" for r in results))
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert f"vllm run-batch -i {source} -o {output} --model fake-405b" in log.read_text()
    train = (run.synth_dir / "train.jsonl").read_bytes()
    assert train == (online.synth_dir / "train.jsonl").read_bytes()
    assert summary(run)["cost"]["usd"] == pytest.approx(
        summary(online)["cost"]["usd"] / 2, abs=2e-6
    )
