import io
from pathlib import Path
from types import SimpleNamespace

import torch
from rich.console import Console

from potstill.config import ModelConfig, StudentConfig, TrainConfig
from potstill.train.stage import build_trainer
from potstill.train.trainer import STAGING, LogProgress, last_complete_checkpoint

ROWS = [
    {
        "id": str(i),
        "prompt": [{"role": "user", "content": "How many apples? " * (i + 1)}],
        "completion": [{"role": "assistant", "content": f"{i} + {i}" + " more" * i}],
    }
    for i in range(4)
]


def test_a_staged_checkpoint_is_never_resumed_from(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    torn = tmp_path / STAGING / "checkpoint-8"
    torn.mkdir(parents=True)
    (torn / "model.safetensors").write_bytes(b"half")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / STAGING).exists()
    assert last_complete_checkpoint(tmp_path / "absent") is None


def test_the_lm_head_skips_unlabelled_positions_without_changing_the_loss(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import trl.trainer.utils as trl_utils

    student = StudentConfig(
        name="s", base=ModelConfig(model=str(tiny_model_dir)), train=TrainConfig(dev_fraction=0)
    )
    trainer = build_trainer(student, ROWS, tmp_path / "ckpt").trainer
    assert trl_utils._use_triton(torch.device("cpu"))  # prompt and padding positions skipped
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model

    def loss_and_grads() -> tuple[float, list[torch.Tensor]]:
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        return float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    compact_loss, compact_grads = loss_and_grads()
    swapped = trl_utils._use_triton
    trl_utils._use_triton = lambda device: False  # TRL's own choice on a CPU: every position
    try:
        full_loss, full_grads = loss_and_grads()
    finally:
        trl_utils._use_triton = swapped
    assert abs(compact_loss - full_loss) < 1e-6
    for a, b in zip(compact_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_without_a_terminal_training_steps_are_progress_lines_with_the_loss() -> None:
    buffer = io.StringIO()
    out = Console(file=buffer, force_terminal=False, width=200)
    now = [0.0]
    callback = LogProgress("train[a]", out=out, clock=lambda: now[0])
    state = SimpleNamespace(is_world_process_zero=True, max_steps=40, global_step=10)
    callback.on_train_begin(None, state, None)  # resumed at step 10
    for step in range(11, 41):
        now[0] += 1.0
        state.global_step = step
        callback.on_log(None, state, None, logs={"loss": 2.0 - step / 40})
        callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "train[a]: 40 to do (10 already done)"
    assert lines[1] == "train[a]: 20/40 (50%) (10 cached), 1.0/s, eta 20s, loss 1.500"
    assert lines[-1] == "train[a]: 40/40 in 30s (10 cached), 1.0/s, loss 1.000"
