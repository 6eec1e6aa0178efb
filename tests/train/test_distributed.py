"""The train stage under `accelerate launch`: two CPU processes, DDP over gloo."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from teacher_scores import score_rows

from potstill.config import parse_config
from potstill.records import write_training_rows
from potstill.runs import RunFolder

ROWS = [
    {
        "id": str(i),
        "prompt": [{"role": "user", "content": f"Tom has {i} apples and buys {i % 5} more."}],
        "completion": [{"role": "assistant", "content": f"{i} + {i % 5}"}],
    }
    for i in range(16)
]
ACCELERATE_CONFIGS = sorted(Path("configs/accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 1
    assert config.mixed_precision == "no"  # the train stage decides precision itself


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sft", "kd"])
def test_two_cpu_processes_train_the_same_model(
    tiny_model_dir: Path, tmp_path: Path, loss: str
) -> None:
    from transformers import AutoModelForCausalLM

    train = {"epochs": 1, "batch_size": 2, "learning_rate": 1e-2, "save_steps": 2, "loss": loss}
    tree = {
        "name": "ddp",
        "task": {"kind": "math", "calculator": True},
        "dataset": {"path": "x.jsonl"},
        "synth": {"logprobs": 4},
        "students": [{"name": "s", "base": {"model": str(tiny_model_dir)}, "train": train}],
    }
    config = parse_config(tree, "ddp.yaml")
    run = RunFolder(tmp_path / "ddp")
    run.root.mkdir()
    run.save_config(config)
    write_training_rows(run.synth_dir / "train.jsonl", ROWS)
    if loss == "kd":  # the teacher columns travel with each rank's batches
        score_rows(run, tiny_model_dir, ROWS)
    run.mark_done("synth", "test", 0.0)

    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--config_file", "configs/accelerate/ddp.yaml",
        "--num_processes", "2", "--main_process_port", str(_free_port()),
        "-m", "potstill", "train", str(run.root),
    ]  # fmt: skip
    # No GPU here: accelerate's CPU mode, DDP over gloo.
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((run.student_dir("s") / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["loss"] == loss
    ranks = summary["rank_weights"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]  # the stage raises when they differ
    # 15 train rows (1 dev), 2 per process per step, 2 processes: 4 steps
    assert summary["steps"] == 4 and summary["rows"] == 15
    manifest = json.loads(run.manifest_path.read_text())
    assert manifest["stages"]["train"]["status"] == "done"
    trained = AutoModelForCausalLM.from_pretrained(run.student_dir("s") / "final")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any((a != b).any() for a, b in zip(trained.parameters(), base.parameters()))
    assert yaml.safe_load(run.config_path.read_text())["name"] == "ddp"
