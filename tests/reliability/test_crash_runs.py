"""Crash runs: `potstill run` SIGKILLed at 20 random moments, each followed by a resume.

Run folders killed up to four times each, once in each stage (synth, train, evaluate,
report), at a random moment of it: a delay drawn up to the stage's length in an
uninterrupted run, from when the process announces the stage. After each kill the same
command runs again (a kill that comes after the stage has ended is not counted); then it
runs to the end, and a new folder starts, until 20 kills have landed. Every finished folder
must match an uninterrupted run's: the same synth/train.jsonl, the same predictions, the same
judge records and the same report numbers. After every kill, no JSON or JSONL file in the run
folder is torn, and every published checkpoint is complete.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from fault_server import FaultServer
from review_task import LABELS, endpoint, reply, reviews

from potstill.pipeline import STAGES

if TYPE_CHECKING:
    from conftest import Tally

KILLS = 20
POTSTILL = Path(sys.executable).with_name("potstill")
# What a run's outcome is made of; timings, cost per request and paths are not.
TIMING = {"latency_s", "seconds", "elapsed_s", "compute_s", "created", "wall_s"}


def spawn(config: Path, runs: Path, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [str(POTSTILL), "run", str(config), "--runs-dir", str(runs)]
    return subprocess.Popen(command, stdout=handle, stderr=handle, env=env)


def announced(proc: subprocess.Popen[bytes], log: Path, stage: str) -> bool:
    """Wait until the process prints the stage's rule (it has started the stage's work, past
    its start-up), or ends; False if neither happens in 5 minutes."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if f"─ {stage} ─" in log.read_text(errors="replace") or proc.poll() is not None:
            return True
        time.sleep(0.02)
    return False


def stage_at(run: Path) -> str:
    """The stage a killed run was in: the first one not recorded as done."""
    manifest = run / "manifest.json"
    if not manifest.exists():
        return "start"
    stages = json.loads(manifest.read_text()).get("stages", {})
    return next((s for s in STAGES if stages.get(s, {}).get("status") != "done"), "finished")


def check_nothing_torn(run: Path) -> int:
    """Every JSON and JSONL file parses whole; every published checkpoint is complete.
    Returns how many files were checked."""
    checked = 0
    for path in run.rglob("*.json*"):
        if ".incomplete" in path.parts or not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), 1):
                assert line.strip(), f"{path}:{number}: an empty line"
                json.loads(line)  # raises on a torn line
        elif path.suffix == ".json":
            json.loads(text)
        checked += 1
    for checkpoint in run.glob("students/*/checkpoints/checkpoint-*"):
        assert (checkpoint / "trainer_state.json").exists(), f"{checkpoint} is half written"
    return checked


def outcome(run: Path) -> dict[str, Any]:
    """The parts of a finished run that must not depend on crashes."""

    def rows(path: Path) -> list[dict[str, Any]]:
        return [strip(json.loads(line)) for line in path.read_text().splitlines()]

    found: dict[str, Any] = {"train": (run / "synth" / "train.jsonl").read_text()}
    for folder in ("predictions", "judge"):
        for path in sorted((run / "eval" / folder).glob("*.jsonl")):
            found[f"{folder}/{path.name}"] = rows(path)
    scores = json.loads((run / "eval" / "scores.json").read_text())
    found["metrics"] = {name: strip(c["metrics"]) for name, c in scores["candidates"].items()}
    found["comparisons"] = strip(scores["comparisons"])
    found["students"] = {
        p.parent.name: json.loads(p.read_text())["steps"]
        for p in sorted(run.glob("students/*/summary.json"))
    }
    return found


def strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


@pytest.mark.slow
def test_twenty_sigkills_across_a_run_then_resumes_end_as_an_uninterrupted_run(
    tiny_model_dir: Path, tmp_path: Path, tally: Tally
) -> None:
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reviews()))
    server = FaultServer(reply=reply)
    url = server.start()
    config = tmp_path / "run.yaml"
    tree = {
        "name": "crash",
        "task": {"kind": "classification", "labels": LABELS},
        "dataset": {"path": str(data), "test_size": 20},
        "teacher": {
            "model": endpoint(url, "teacher", max_concurrency=4),
            "prompt": {"style": "cot"},
        },
        "students": [
            {
                "name": "distilled",
                "base": {"model": str(tiny_model_dir)},
                "train": {"epochs": 2, "batch_size": 4, "save_steps": 3},
            }
        ],
        "synth": {"prompt": {"style": "zero_shot", "max_tokens": 4}},
        "evaluate": {"bootstrap_samples": 100},
        "judge": {"model": endpoint(url, "judge", max_concurrency=4), "sample_size": 8},
    }
    config.write_text(yaml.safe_dump(tree))
    log = tmp_path / "runs.log"
    try:
        start = time.monotonic()
        assert spawn(config, tmp_path / "reference", log).wait(timeout=600) == 0, log.read_text()
        whole = time.monotonic() - start
        expected = outcome(tmp_path / "reference" / "crash")

        reference = json.loads((tmp_path / "reference" / "crash" / "manifest.json").read_text())
        seconds = {stage: reference["stages"][stage]["seconds"] for stage in STAGES}

        rng = random.Random(2410)
        kills: Counter[str] = Counter()
        folders, files_checked = 0, 0
        while sum(kills.values()) < KILLS:
            folders += 1
            runs = tmp_path / f"crashed-{folders}"
            for target in STAGES:
                stage_log = tmp_path / f"crashed-{folders}-{target}.log"
                proc = spawn(config, runs, stage_log)
                assert announced(proc, stage_log, target), stage_log.read_text()[-5000:]
                time.sleep(rng.uniform(0, seconds[target]))
                if proc.poll() is not None:  # it finished the stage and the run first
                    assert proc.returncode == 0, stage_log.read_text()[-5000:]
                    continue
                stage = stage_at(runs / "crash")
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=60) == -signal.SIGKILL
                kills[stage] += 1
                files_checked += check_nothing_torn(runs / "crash")
                if sum(kills.values()) == KILLS:
                    break
            assert spawn(config, runs, log).wait(timeout=600) == 0, log.read_text()[-5000:]
            assert outcome(runs / "crash") == expected, f"folder {folders} differs"
    finally:
        server.stop()

    figures = {
        "kills": sum(kills.values()),
        "resumes": sum(kills.values()),
        "run folders": folders,
        "identical results": folders,
        "files checked whole after a kill": files_checked,
        "uninterrupted run s": round(whole),
    }
    for name, value in figures.items():
        tally.count(f"crash runs: {name}", value)
    for stage, n in sorted(kills.items()):
        tally.count(f"crash runs: kills during {stage}", n)
    print(f"crash runs: {figures}; kills by stage {dict(kills)}")
