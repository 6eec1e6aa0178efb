"""A classification run whose teacher is an OpenAI-compatible endpoint over real HTTP, and the
secrets check: a planted key appears in no file, log or report."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from fault_server import FaultServer
from review_task import REVIEWS

from potstill.records import Scores, read_record

if TYPE_CHECKING:
    from conftest import Tally

SENTINEL = "sk-potstill-sentinel-4f9a"
DECOY = "sk-potstill-decoy-4f9a"  # in OPENAI_API_KEY, which the config does not name
POTSTILL = Path(sys.executable).with_name("potstill")


def _labelling_server(fault_server: Callable[..., FaultServer]) -> FaultServer:
    """A teacher that knows every review's label and answers in the cot JSON format; its first
    call is refused (401) with an error body that quotes the bearer key back, and every later
    reply (a 200, as from a misbehaving proxy) quotes it too: in the rationale, and in the
    whole reply to the first review answered, which no parser can read (a rejected row)."""
    unreadable: set[str] = set()

    def label(body: dict[str, Any]) -> str:
        review = body["messages"][-1]["content"]
        if not unreadable:  # a training review (synth asks first), whichever run keeps it
            unreadable.add(review)
        if review in unreadable:
            return f"I cannot tell; {server.asking_key}"
        reason = f"the reviewer's words, read with {server.asking_key}"
        return json.dumps({"reason": reason, "answer": REVIEWS.get(review, "positive")})

    server = fault_server(
        reply=label,
        script=lambda key, attempt: None if server.log else "401",
        echo_key=True,
        tokens=lambda body, text: (40, 12),
    )
    return server


def _potstill(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POTSTILL_TEST_TEACHER_KEY": SENTINEL, "OPENAI_API_KEY": DECOY}
    return subprocess.run([str(POTSTILL), *args], capture_output=True, text=True, env=env)


def test_endpoint_teacher_run_keeps_the_key_out_of_every_file(
    fault_server: Callable[..., FaultServer], tiny_model_dir: Path, tmp_path: Path, tally: "Tally"
) -> None:
    api = _labelling_server(fault_server)
    url = api.url
    data = tmp_path / "reviews.csv"
    data.write_text(
        "review,sentiment\n" + "".join(f'"{text}",{label}\n' for text, label in REVIEWS.items())
    )
    config = {
        "name": "endpoint",
        "task": {"kind": "classification", "labels": ["positive", "negative"]},
        "dataset": {
            "path": "reviews.csv",
            "fields": {"text": "review", "answer": "sentiment"},
            "test_size": 4,
        },
        "teacher": {
            "model": {
                "backend": "openai",
                "model": "big-teacher",
                "base_url": url,
                "api_key_env": "POTSTILL_TEST_TEACHER_KEY",
                "price_per_million_input": 2.0,
                "price_per_million_output": 8.0,
            },
            "prompt": {"style": "cot", "max_tokens": 32},
        },
        "students": [
            {
                "name": "distilled",
                "base": {"model": str(tiny_model_dir)},
                "train": {"epochs": 1, "batch_size": 4},
            }
        ],
        "synth": {"prompt": {"style": "zero_shot", "max_tokens": 4}},
        "evaluate": {"bootstrap_samples": 200},
        # The judge is the same endpoint, so its calls carry the key too.
        "judge": {
            "model": {
                "backend": "openai",
                "model": "big-teacher",
                "base_url": url,
                "api_key_env": "POTSTILL_TEST_TEACHER_KEY",
            },
            "sample_size": 4,
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    # The installed command in its own process, so every log line it writes is captured.
    # The first call is refused (401, the key quoted back): the stage stops at once, and the
    # message shows the key redacted.
    refused = _potstill("run", str(path), "--runs-dir", str(runs))
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "upstream error 401 (key ***)" in refused.stdout + refused.stderr
    result = _potstill("run", str(path), "--runs-dir", str(runs))  # the key works now
    assert result.returncode == 0, result.stderr[-3000:]

    run = runs / "endpoint"
    summary = json.loads((run / "synth" / "summary.json").read_text())
    assert summary["accepted"] == 7 and summary["failed_calls"] == 0
    assert sum(summary["rejected"].values()) == 1
    assert summary["teacher_accuracy_on_train"] == 7 / 8
    # The echoed key is kept redacted where the reply is kept.
    (rejected,) = [json.loads(line) for line in (run / "synth" / "rejected.jsonl").open()]
    assert rejected["reply"] == "I cannot tell; ***"
    assert "I cannot tell; ***" in (run / "synth" / "card.md").read_text()
    rows = [json.loads(line) for line in (run / "synth" / "train.jsonl").read_text().splitlines()]
    assert {r["completion"][0]["content"] for r in rows} <= {"positive", "negative"}
    # 8 calls of 40 prompt and 12 completion tokens at $2 and $8 per million
    report = (run / "report.md").read_text()
    assert "Teacher cost of the synthetic data: $0.0014 (8 calls, 320 + 96 tokens)" in report
    assert json.loads((run / "manifest.json").read_text())["stages"]["synth"]["cost_usd"] == (
        0.001408
    )
    scores = read_record(run / "eval" / "scores.json", Scores)
    assert scores.candidates["teacher"].metrics["accuracy"].value == 1.0
    assert scores.judge is not None
    assert scores.judge["calls"] > 0 and scores.judge["same_as_teacher"]
    # the key did reach the API, and only the key from the variable the config names
    assert api.api_keys and all(key == SENTINEL for key in api.api_keys)

    # Grading and a re-rendered report: grades.sqlite and the report join the scan.
    logs = [refused.stdout, refused.stderr, result.stdout, result.stderr]
    for args in (["grade", str(run), "--add-grader", "ann"], ["report", str(run)]):
        done = _potstill(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        logs += [done.stdout, done.stderr]
    scanned = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in scanned}
    assert {"calls.sqlite", "grades.sqlite", "report.md", "report.html", "config.yaml"} <= names
    leaks = [p for p in scanned for key in (SENTINEL, DECOY) if key.encode() in p.read_bytes()]
    leaks += [log for log in logs for key in (SENTINEL, DECOY) if key in log]
    tally.count("secrets: files scanned", len(scanned))
    tally.count("secrets: logs scanned", len(logs))
    tally.count("secrets: sentinel hits", len(leaks))
    assert leaks == []
