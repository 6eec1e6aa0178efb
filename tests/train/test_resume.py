"""A real `potstill train RUN` process is SIGKILLed in the middle of writing a checkpoint; the
next `potstill train RUN` continues from the last complete one, sees the same batches, and ends
where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from teacher_scores import score_rows

from potstill.config import RunConfig, parse_config
from potstill.files import read_jsonl
from potstill.pipeline import run_stage
from potstill.records import write_training_rows
from potstill.runs import RunFolder
from potstill.train.trainer import STAGING

ROWS = [
    {
        "id": str(i),
        "prompt": [{"role": "user", "content": f"Tom has {i} apples and buys {i % 5} more."}],
        "completion": [{"role": "assistant", "content": f"{i} + {i % 5}" + " + 0" * (i % 7)}],
    }
    for i in range(24)
]
KILL_AT = 16  # 18 train rows / batch 2 = 9 steps an epoch, 2 epochs; checkpoints every 4 steps

# Runs the real CLI, except that the process SIGKILLs itself while checkpoint-16 is half
# written (weights and optimizer saved, RNG state and trainer state not yet).
KILLER = textwrap.dedent(
    f"""
    import os, signal, sys
    from transformers import Trainer
    original = Trainer._save_rng_state
    def crash(self, output_dir):
        if self.state.global_step == {KILL_AT}:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)
    Trainer._save_rng_state = crash
    from potstill.cli import main
    sys.argv = ["potstill", *sys.argv[1:]]
    main()
    """
)


def _config(model_dir: Path, loss: str = "sft") -> RunConfig:
    train = {"epochs": 2, "batch_size": 2, "learning_rate": 5e-3, "save_steps": 4}
    train.update(dev_fraction=0.25, loss=loss)
    tree = {
        "name": "r",
        "task": {"kind": "math", "calculator": True},
        "dataset": {"path": "x.jsonl"},
        "synth": {"logprobs": 4},
        "students": [{"name": "s", "base": {"model": str(model_dir)}, "train": train}],
    }
    return parse_config(tree, "r.yaml")


def _run(root: Path, config: RunConfig) -> RunFolder:
    run = RunFolder(root)
    run.root.mkdir(parents=True)
    run.save_config(config)
    write_training_rows(run.synth_dir / "train.jsonl", ROWS)
    if config.students[0].train.loss == "kd":
        score_rows(run, Path(config.students[0].base.model), ROWS)
    run.mark_done("synth", "test", 0.0)
    return run


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sft", "kd"])
def test_sigkill_then_resume_matches_an_uninterrupted_run(
    tiny_model_dir: Path, tmp_path: Path, loss: str
) -> None:
    config = _config(tiny_model_dir, loss)
    whole = _run(tmp_path / "whole", config)
    expected = run_stage(whole, config, "train")["s"]

    run = _run(tmp_path / "crashed", config)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = _cli(str(script), "train", str(run.root))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpts = run.student_dir("s") / "checkpoints"
    assert (ckpts / STAGING / f"checkpoint-{KILL_AT}").exists()  # the torn one, staged
    assert not (ckpts / f"checkpoint-{KILL_AT}").exists()
    assert (ckpts / "checkpoint-12" / "trainer_state.json").exists()

    resumed = _cli("-m", "potstill", "train", str(run.root))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    said = resumed.stdout + resumed.stderr
    assert "resuming from" in said and "checkpoint-12" in said
    got = json.loads((run.student_dir("s") / "summary.json").read_text())
    assert got["steps"] == expected["steps"] == 18
    assert got["resumed_from"].endswith("checkpoint-12")
    assert got["last_loss"] == pytest.approx(expected["last_loss"], rel=1e-3)
    assert got["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-3)
    # The same batches in the same order, before and after the crash, step by step.
    curve, reference = (
        [e["loss"] for e in read_jsonl(r.student_dir("s") / "train_log.jsonl") if "loss" in e]
        for r in (run, whole)
    )
    assert len(curve) == len(reference) == 18
    assert curve == pytest.approx(reference, rel=1e-3)
    assert (run.student_dir("s") / "final" / "config.json").exists()
