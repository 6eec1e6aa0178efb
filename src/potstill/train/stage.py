"""The train stage: supervised fine-tuning of each student on synth/train.jsonl (TRL + PEFT)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from potstill.config import StudentConfig
from potstill.models.packaged import gpu_bf16, load_pretrained
from potstill.progress import console
from potstill.runs import RunFolder, read_jsonl, write_json, write_jsonl


def _sft_config(student: StudentConfig, output_dir: Path) -> Any:
    from trl import SFTConfig

    t = student.train
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_length=t.max_length,
        # Loss on the assistant reply only: the prompt tokens are masked out.
        completion_only_loss=True,
        # A small student fits in memory; recomputing activations would only cost time.
        gradient_checkpointing=False,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # below 1: a fraction of all steps
        logging_steps=1,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",
        # Mixed precision on a GPU that has bf16; fp32 on the CPU, where bf16 is slower.
        bf16=gpu_bf16(),
        fp16=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # CPU training: nothing to pin for
        disable_tqdm=False,
    )


def _peft_config(student: StudentConfig) -> Any:
    if student.train.method != "lora":
        return None
    from peft import LoraConfig

    t = student.train
    return LoraConfig(
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def _save_final(trainer: Any, tokenizer: Any, final_dir: Path, method: str) -> None:
    """Save a standalone model (LoRA merged in; the adapter kept beside it), whole or not at all."""
    tmp = final_dir.parent / f".{final_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.model
    if method == "lora":
        model.save_pretrained(final_dir.parent / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(tmp, final_dir)


def build_trainer(run: RunFolder, student: StudentConfig) -> tuple[Any, Any, int]:
    """The SFTTrainer for one student on synth/train.jsonl, with its tokenizer and row count."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    rows = read_jsonl(run.synth_dir / "train.jsonl")
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    torch.manual_seed(student.train.seed)
    tokenizer, model = load_pretrained(student.base.model)
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(student, run.student_dir(student.name) / "checkpoints"),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=_peft_config(student),
    )
    return trainer, tokenizer, len(rows)


def train_student(run: RunFolder, student: StudentConfig) -> dict[str, Any]:
    """Fine-tune one student; resumes from its last checkpoint if one exists."""
    from transformers.trainer_utils import get_last_checkpoint

    trainer, tokenizer, rows = build_trainer(run, student)
    folder = run.student_dir(student.name)
    ckpt_dir = folder / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.exists() else None
    if last:
        console.print(f"train[{student.name}]: resuming from {last}")
    result = trainer.train(resume_from_checkpoint=last)
    _save_final(trainer, tokenizer, folder / "final", student.train.method)
    log = [entry for entry in trainer.state.log_history if "loss" in entry or "train_loss" in entry]
    write_jsonl(folder / "train_log.jsonl", log)
    summary = {
        "rows": rows,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "seconds": result.metrics.get("train_runtime"),
        "method": student.train.method,
        "base": student.base.model,
    }
    write_json(folder / "summary.json", summary)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary
