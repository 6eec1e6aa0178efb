"""Fault runs: a whole run (synth, train, evaluate with the LLM judge, report) against an
endpoint that fails 30% of its requests, every fault kind drawn at random.

What is asserted: every synth input ends accepted or rejected with a reason, and every
failed call is in synth/errors.jsonl; every test example has one prediction per candidate,
answered or in eval/errors.jsonl; nothing is lost or duplicated; the summaries' counts match
the files; no call the store holds is sent again (the server answers each question once).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fault_server import FaultServer
from review_task import endpoint, reply, reviews

from potstill.config import parse_config
from potstill.errors import StageIncomplete
from potstill.files import read_jsonl
from potstill.pipeline import run_pipeline
from potstill.runs import RunFolder

if TYPE_CHECKING:
    from conftest import Tally


def check_synth(run: RunFolder) -> dict[str, int]:
    synth = run.synth_dir
    inputs = [row["id"] for row in read_jsonl(run.root / "data" / "train.jsonl")]
    records = list(read_jsonl(synth / "teacher.jsonl"))
    accepted = [row["id"] for row in read_jsonl(synth / "train.jsonl")]
    rejected = list(read_jsonl(synth / "rejected.jsonl"))
    errors = list(read_jsonl(synth / "errors.jsonl"))
    summary = json.loads((synth / "summary.json").read_text())
    assert sorted(r["id"] for r in records) == sorted(inputs)  # one record per input
    assert len(set(accepted)) == len(accepted)  # no duplicate training row
    assert not set(accepted) & {r["id"] for r in rejected}
    assert sorted(accepted + [r["id"] for r in rejected]) == sorted(inputs)  # none lost
    assert all(r["rejected"] for r in rejected)  # each with its reason
    assert all(e["status"] and e["reason"] for e in errors)
    assert summary["accepted"] == len(accepted)
    assert sum(summary["rejected"].values()) == len(rejected)
    assert summary["failed_calls"] == len(errors)
    return {"rows": len(inputs), "failed": len(errors)}


def check_evaluate(run: RunFolder, candidates: list[str]) -> dict[str, int]:
    test = [row["id"] for row in read_jsonl(run.root / "data" / "test.jsonl")]
    scores = json.loads((run.eval_dir / "scores.json").read_text())
    errors = list(read_jsonl(run.eval_dir / "errors.jsonl"))
    assert scores["order"] == candidates
    failed = 0
    for name in candidates:
        rows = list(read_jsonl(run.eval_dir / "predictions" / f"{name}.jsonl"))
        assert [r["id"] for r in rows] == test  # one prediction per example, in order
        assert all((r["reply"] is None) != (r["error"] is None) for r in rows)
        failed += sum(r["error"] is not None for r in rows)
    predicted = [e for e in errors if e["phase"] == "predict"]
    assert len(predicted) == failed
    assert all(e["status"] and e["reason"] for e in errors)
    assert scores["failed_calls"] == len(errors)
    return {"rows": len(test) * len(candidates), "failed": len(errors)}


@pytest.mark.slow
def test_a_run_at_a_30_percent_fault_rate_loses_nothing_and_pays_nothing_twice(
    tiny_model_dir: Path, tmp_path: Path, tally: Tally
) -> None:
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reviews()))
    server = FaultServer(reply=reply, rate=0.3, seed=11, hang_s=3.0, slow_s=0.1)
    url = server.start()
    tree = {
        "name": "faults",
        "task": {"kind": "classification", "labels": ["positive", "negative"]},
        "dataset": {"path": str(data), "test_size": 30},
        "teacher": {"model": endpoint(url, "teacher"), "prompt": {"style": "cot"}},  # hangs: 3 s
        "students": [
            {
                "name": "distilled",
                "base": {"model": str(tiny_model_dir)},
                "train": {"epochs": 1, "batch_size": 8},
            }
        ],
        "synth": {"prompt": {"style": "zero_shot", "max_tokens": 4}},
        "evaluate": {"bootstrap_samples": 100},
        "judge": {"model": endpoint(url, "judge"), "sample_size": 12},
    }
    config = parse_config(tree, "fault-run")
    start = time.monotonic()
    incomplete = 0
    try:
        # First without retries: the synth stage ends incomplete (exit code 3 from the CLI),
        # every failed call in errors.jsonl and its row rejected as call_failed.
        hasty = parse_config(tree, "fault-run", ["teacher.model.max_retries=0"])
        with pytest.raises(StageIncomplete):
            run_pipeline(hasty, tmp_path / "runs", stop_after="synth")
        first = check_synth(RunFolder(tmp_path / "runs" / "faults"))
        summary = json.loads((tmp_path / "runs/faults/synth/summary.json").read_text())
        assert first["failed"] > 0 and summary["rejected"]["call_failed"] == first["failed"]
        # Then with retries: the failed calls are sent again, the stored answers are not.
        for _ in range(4):  # a stage with failed calls exits incomplete; a re-run retries them
            try:
                run = run_pipeline(config, tmp_path / "runs")
                break
            except StageIncomplete:
                incomplete += 1
        else:
            pytest.fail("the run did not complete in 4 tries")
    finally:
        server.stop()
    wall = time.monotonic() - start

    synth = check_synth(run)
    candidates = ["teacher", "teacher_zero_shot", "base_student", "distilled"]
    evaluate = check_evaluate(run, candidates)
    assert (run.root / "report.md").exists()

    injected = server.injected()
    requests = len(server.log)
    questions = len(server.attempts)
    assert set(injected) == {
        "429",
        "429_bare",
        "500",
        "502",
        "503",
        "hang",
        "reset",
        "truncated",
        "not_json",
        "empty_choices",
        "length",
        "slow",
    }
    assert 0.25 < sum(injected.values()) / requests < 0.35
    # No question the server answered in full was asked again: stored answers are not re-sent.
    assert max(server.answered.values()) == 1
    with_answer = Counter(
        key for _, key, _, fault in server.log if fault in ("ok", "length", "slow")
    )
    assert with_answer == server.answered
    rows = synth["rows"] + evaluate["rows"]
    figures = {
        "rows": rows,
        "requests": requests,
        "faults injected": sum(injected.values()),
        "retries": requests - questions,
        "failed calls without retries (then retried)": first["failed"],
        "final failures": synth["failed"] + evaluate["failed"],
        "incomplete runs re-run": incomplete,
        "lost": 0,  # asserted above: every input and test example is accounted for
        "duplicated": 0,  # asserted above: ids are unique in every file
        "wall s": round(wall),
    }
    for name, value in figures.items():
        tally.count(f"fault run: {name}", value)
    for fault, n in sorted(injected.items()):
        tally.count(f"fault run: injected {fault}", n)
    print(f"fault run: {figures}; injected {dict(injected)}")
