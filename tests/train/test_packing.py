"""Packing never lets one row attend to another: each row's log-probabilities are the same
alone, in a padded batch and in a padding-free (packed) batch."""

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from potstill.config import ModelConfig, StudentConfig, TrainConfig
from potstill.train.stage import build_trainer

ROWS = [
    {
        "id": str(i),
        "prompt": [{"role": "user", "content": f"Question {i}: " + "how many? " * (1 + 3 * i)}],
        "completion": [{"role": "assistant", "content": f"{i} + {i}" + " and more" * (5 - i)}],
    }
    for i in range(3)
]


def _trainer(model_dir: Path, tmp_path: Path, attn: str, batching: str) -> Any:
    train = TrainConfig(dev_fraction=0.0, attn_implementation=attn, batching=batching)  # type: ignore[arg-type]
    student = StudentConfig(name="s", base=ModelConfig(model=str(model_dir)), train=train)
    trainer = build_trainer(student, ROWS, tmp_path / attn / batching).trainer
    trainer.model.eval()
    return trainer


def _row_logprobs(model: Any, batch: dict[str, Any]) -> list[torch.Tensor]:
    """Log-probability of each next token, per row (separated at position 0 when packed)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    inputs["use_cache"] = False  # as SFTTrainer.compute_loss calls the model
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    ids = batch["input_ids"]
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    if "attention_mask" in batch:  # padded: one row per sequence
        lengths = batch["attention_mask"].sum(-1).tolist()
        return [logp[r, : n - 1] for r, n in enumerate(lengths)]
    starts = [*(batch["position_ids"][0] == 0).nonzero().flatten().tolist(), ids.shape[1]]
    # the last position of each sequence predicts the next sequence's first token: dropped
    return [logp[0, a : b - 1] for a, b in itertools.pairwise(starts)]


def _features(trainer: Any) -> list[dict[str, Any]]:
    data = trainer.train_dataset
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in data]


@pytest.mark.parametrize("attn", ["sdpa", "eager", "potstill_varlen"])
def test_each_row_sees_only_itself(tiny_model_dir: Path, tmp_path: Path, attn: str) -> None:
    packed = _trainer(tiny_model_dir, tmp_path, attn, "padding_free")
    features = _features(packed)
    assert len({len(f["input_ids"]) for f in features}) == 3  # three different lengths
    alone = [_row_logprobs(packed.model, packed.data_collator([f]))[0] for f in features]
    batch = packed.data_collator(features)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert batch["input_ids"].shape[1] == sum(len(f["input_ids"]) for f in features)
    for got, want in zip(_row_logprobs(packed.model, batch), alone):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    padded = _trainer(tiny_model_dir, tmp_path, attn, "length_grouped")
    batch = padded.data_collator(features)
    assert batch["attention_mask"].shape == (3, max(len(f["input_ids"]) for f in features))
    for got, want in zip(_row_logprobs(padded.model, batch), alone):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_check_detects_rows_that_see_each_other(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Control: the same packed row with positions 0..n-1 throughout (one long sequence, no
    boundaries) changes the later rows' log-probabilities, so the test above can fail."""
    packed = _trainer(tiny_model_dir, tmp_path, "sdpa", "padding_free")
    features = _features(packed)
    alone = [_row_logprobs(packed.model, packed.data_collator([f]))[0] for f in features]
    batch = packed.data_collator(features)
    flat = {"input_ids": batch["input_ids"]}
    with torch.no_grad():
        logits = packed.model(**flat).logits.float()
    ids = batch["input_ids"]
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[0, :, 0]
    second = len(features[0]["input_ids"])
    leaked = logp[second : second + len(alone[1])]
    assert not torch.allclose(leaked, alone[1], atol=1e-3)
