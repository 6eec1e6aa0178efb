"""TRL's SFTTrainer with two changes a long run needs: checkpoints that appear only when
complete, and length-grouped batches whose order is fixed by (seed, epoch) (train/batching.py),
so a resumed run sees the same batches as one never interrupted."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import TrainerCallback
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    get_last_checkpoint,
    rotate_checkpoints,
)
from trl import SFTTrainer

from potstill.progress import Clock, Meter, metered
from potstill.train.batching import SeededLengthGroupedSampler

# Checkpoints are written here first and renamed into the checkpoint folder when complete;
# `get_last_checkpoint` looks only at `checkpoint-N` folders, so it never sees a torn one.
STAGING = ".incomplete"


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint in `folder`; staged, unfinished ones are removed."""
    if not folder.exists():
        return None
    shutil.rmtree(folder / STAGING, ignore_errors=True)
    found: str | None = get_last_checkpoint(str(folder))
    return found


def score_trained_positions_only() -> bool:
    """Make TRL's fused LM head project only the positions that carry a label on every device.

    TRL's chunked LM head skips prompt and padding positions on Triton devices only, and
    scores every position elsewhere so that tile shapes stay fixed for ahead-of-time compilers
    (Neuron). On a CPU nothing is compiled, and the vocabulary projection of prompt and padding
    positions costs about a fifth of a step; the loss is the same either way
    (tests/train/test_trainer.py). TRL decides with a private helper, so this swaps it for one
    that also says yes on the CPU; if a TRL release renames it, nothing changes but the speed.
    Returns whether the swap is in place."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        return False
    if getattr(original, "potstill", False):
        return True

    def compact(device: torch.device) -> bool:
        return device.type == "cpu" or bool(original(device))

    compact.potstill = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact
    return True


class PotstillSFTTrainer(SFTTrainer):  # type: ignore[misc]
    """SFTTrainer + atomic checkpoints + a seeded length-grouped sampler (when asked for) + an
    LM head that skips unlabelled positions on the CPU too."""

    def __init__(self, *args: Any, length_grouped: bool = False, **kwargs: Any) -> None:
        self._length_grouped = length_grouped
        self._staging = False
        score_trained_positions_only()
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self._length_grouped:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return SeededLengthGroupedSampler(lengths, self.args.train_batch_size, seed)

    def _get_output_dir(self, trial: Any) -> str:
        run_dir: str = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if self._staging else run_dir

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        root = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        # Every rank has written its part (its RNG state, its optimizer shard) before the
        # checkpoint is published.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            staged, final = root / STAGING / name, root / name
            _fsync_tree(staged)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staged, final)
            _fsync_tree(root)
            rotate_checkpoints(str(root), self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()


class LogProgress(TrainerCallback):  # type: ignore[misc]
    """Training steps as potstill's progress lines (for a log without a terminal, where
    the trainer's own tqdm bar and per-step dicts are turned off): steps, rate, ETA, loss."""

    def __init__(
        self, label: str, out: Console | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.label, self.out, self.clock = label, out, clock
        self._shown = ExitStack()
        self._meter: Meter | None = None
        self._refresh: Callable[[], None] = lambda: None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:  # a resumed run starts at its checkpoint's step
            self._meter = Meter(
                self.label, state.max_steps, cached=state.global_step, clock=self.clock
            )
            self._refresh = self._shown.enter_context(metered(self._meter, self.out))

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self._meter is not None and logs and "loss" in logs:
            self._meter.note = f"loss {logs['loss']:.3f}"

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._meter is not None:
            self._meter.done = state.global_step
            self._refresh()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._shown.close()


class PotstillKDTrainer(PotstillSFTTrainer):
    """PotstillSFTTrainer whose loss also pulls the student toward the teacher's top-K token
    distributions (train/kd.py), carried in the rows' teacher columns."""

    def __init__(
        self, *args: Any, kd_alpha: float, kd_temperature: float, kd_k: int, **kwargs: Any
    ) -> None:
        from potstill.train.kd import teacher_collator

        self.kd_alpha, self.kd_temperature = kd_alpha, kd_temperature
        super().__init__(*args, **kwargs)
        base: Any = getattr(self, "data_collator")  # noqa: B009 (typed Any: TRL's is untyped)
        setattr(self, "data_collator", teacher_collator(base, kd_k, self.padding_free))  # noqa: B010

    def _set_signature_columns_if_needed(self) -> None:
        from potstill.train.kd import TEACHER_COLUMNS

        super()._set_signature_columns_if_needed()
        columns: list[str] = list(getattr(self, "_signature_columns", None) or [])
        setattr(self, "_signature_columns", [*columns, *TEACHER_COLUMNS])  # noqa: B010

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        from potstill.train.kd import TEACHER_KEYS, kd_token_losses

        ids, lps, teacher_has = (inputs.pop(key) for key in TEACHER_KEYS)
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        loss, kl, has = kd_token_losses(
            outputs.logits, labels, ids, lps, teacher_has, self.kd_alpha, self.kd_temperature
        )
        count = has.numel() if num_items_in_batch is None else num_items_in_batch
        total = loss.sum() / torch.as_tensor(count, device=loss.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            total = total * self.accelerator.num_processes
        mode = "train" if model.training else "eval"
        if has.any():
            self._metrics[mode]["kd_kl"].append(float(kl[has].mean().detach()))
        return (total, outputs) if return_outputs else total
