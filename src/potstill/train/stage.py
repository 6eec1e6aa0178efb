"""The train stage: supervised fine-tuning of each student variant (TRL SFTTrainer + PEFT).

Per student: build its rows (train/data.py) into students/<name>/train.jsonl, hold out a dev
split, tokenize (models/tokens.py, so content stays text), lint the loss mask (train/lint.py),
train in batches that spend no compute on padding, checkpoint atomically and resume after a
crash (train/trainer.py), then publish a standalone model (LoRA merged, adapter kept) with its
tokenizer and generation config.
Runs the same in one process or under `accelerate launch` (DDP, FSDP, DeepSpeed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from potstill.config import ChecksConfig, RunConfig, StudentConfig, TrainConfig
from potstill.guards import student_figures, student_warnings
from potstill.models.packaged import gpu_bf16, load_pretrained, release_memory
from potstill.models.tokens import prompt_completion_ids
from potstill.progress import console
from potstill.records import (
    TeacherRow,
    TrainLogEntry,
    TrainSummary,
    read_record,
    read_records,
    write_record,
    write_records,
    write_training_rows,
)
from potstill.runs import RunFolder, is_main_process
from potstill.summaries import say, train_end_sentence, train_start_sentence, warning_lines
from potstill.tasks import Task
from potstill.train import attention, tracking
from potstill.train.data import StudentRows, split_dev, student_rows
from potstill.train.lint import TrainingDataError, end_of_turn_ids, lint_dataset

# Attention implementations that take a packed row without building a dense mask.
_PACKED_KERNELS = ("flash_attention_2", "flash_attention_3", "flex_attention", attention.NAME)


def attention_for(train: TrainConfig) -> str | None:
    """The attention implementation in use. Unset, on a machine without a CUDA GPU, and with
    batching that may pack (auto, padding_free): `potstill_varlen`, which there runs causal
    SDPA on each packed sequence alone; measured on 2 CPU cores with SmolLM2-135M, 1.5x the
    real tokens/s of length-grouped batches padded for SDPA with a mask
    (benchmarks/train_throughput.py). Elsewhere: as configured (None: transformers' default)."""
    import torch

    if (
        train.attn_implementation is None
        and train.batching in ("auto", "padding_free")
        and not torch.cuda.is_available()
    ):
        return attention.NAME
    return train.attn_implementation


def batching_for(train: TrainConfig) -> str:
    """The batching in use: `auto` picks padding-free batches where the attention kernel
    isolates packed sequences cheaply, else length-grouped padded batches."""
    if train.batching != "auto":
        return train.batching
    kernel = attention_for(train) or ""
    return "padding_free" if kernel.startswith(_PACKED_KERNELS) else "length_grouped"


def _sft_config(
    student: StudentConfig, output_dir: Path, has_dev: bool, folder: Path | None = None
) -> Any:
    import torch
    from trl import SFTConfig

    t = student.train
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        # Over-long rows are dropped (and counted) before training rather than truncated:
        # a cut reply loses its answer and its end-of-turn token.
        max_length=None,
        padding_free=batching_for(t) == "padding_free",
        # Loss on the assistant reply only: the prompt tokens are masked out (lint checks it).
        completion_only_loss=True,
        # A small student fits in memory; recomputing activations would only cost time.
        gradient_checkpointing=False,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # below 1: a fraction of all steps
        logging_steps=1,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if has_dev else "no",
        eval_steps=t.eval_steps or t.save_steps,
        seed=t.seed,
        data_seed=t.seed,
        # Trackers only when the student names some (students/<name>/ is `folder`).
        **tracking.sft_arguments(student, folder),
        # Mixed precision on a GPU that has bf16; fp32 on the CPU, where bf16 is slower.
        bf16=gpu_bf16(),
        fp16=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        # Without a terminal, LogProgress prints the steps instead (see build_trainer).
        disable_tqdm=not console.is_terminal,
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


def _dataset(rows: list[dict[str, Any]], tokenizer: Any) -> Any:
    """The rows, tokenized here rather than by TRL (which then only builds the labels), so
    special-token text inside a message's content stays text, as it does in generation."""
    from datasets import Dataset

    keep = ("id", "prompt", "completion", "rationale")
    table = []
    for row in rows:
        ids, mask = prompt_completion_ids(tokenizer, row["prompt"], row["completion"])
        table.append({**{k: row.get(k) for k in keep}, "input_ids": ids, "completion_mask": mask})
    return Dataset.from_list(table)


def _kd_dataset(rows: list[dict[str, Any]], tokenizer: Any, teacher: Any) -> tuple[Any, int]:
    """The rows with their teacher columns (train/kd.py), and how many rows have none: rows
    whose completion the teacher's distributions do not cover token for token (another
    target, another tokenization) train with cross-entropy alone."""
    from datasets import Dataset

    from potstill.train.kd import PAD_LOGPROB

    keep = ("id", "prompt", "completion", "rationale")
    table, without = [], 0
    for row in rows:
        ids, mask = prompt_completion_ids(tokenizer, row["prompt"], row["completion"])
        start = mask.index(1) if 1 in mask else len(ids)
        found = teacher.rows.get(str(row.get("id")))
        if found is None or found.tokens.tolist() != ids[start:] or not found.has.any():
            without += 1
            top_ids, top_lps, has = [], [], []
        else:
            top_ids = found.top_ids.reshape(-1).tolist()
            top_lps = [max(x, PAD_LOGPROB) for x in found.top_logprobs.reshape(-1).tolist()]
            has = found.has.tolist()
        table.append(
            {
                **{k: row.get(k) for k in keep},
                "input_ids": ids,
                "completion_mask": mask,
                "teacher_start": start,
                "teacher_ids": top_ids,
                "teacher_logprobs": top_lps,
                "teacher_has": has,
            }
        )
    return Dataset.from_list(table), without


def check_same_tokenizer(student: StudentConfig, tokenizer: Any, teacher: Any) -> None:
    """train.loss kd compares token ids: the student's vocabulary must be the teacher's."""
    from potstill.synth.logprobs import vocab_digest

    mine = vocab_digest(tokenizer)
    if mine != teacher.vocab:
        raise TrainingDataError(
            f"student {student.name}: train.loss {student.train.loss} needs the teacher's "
            f"tokenizer, but the teacher's distributions (synth/logprobs.npz) are over "
            f"vocabulary {teacher.vocab} and {student.base.model} has {mine}. Use a student "
            "of the teacher's family (same tokenizer) or train.loss: sft."
        )


@dataclass
class Prepared:
    """A trainer ready to run, with what the summary reports about its data."""

    trainer: Any
    tokenizer: Any
    rows: int
    dev_rows: int
    too_long: int
    real_tokens: int
    batching: str
    attention: str | None = None
    # train.loss kd: training rows without teacher distributions (cross-entropy alone).
    kd_without: int | None = None


def build_trainer(
    student: StudentConfig,
    rows: list[dict[str, Any]],
    output_dir: Path,
    folder: Path | None = None,
    teacher: Any = None,
) -> Prepared:
    """The trainer for one student: TRL tokenizes, over-long rows are dropped, the loss mask
    is linted, and batches follow the student's `batching`. With the student's `folder`,
    its trackers (`train.report_to`) log there. With `teacher` (train.loss kd:
    synth/logprobs.read), the loss also pulls toward the teacher's distributions."""
    import torch

    from potstill.train.trainer import PotstillKDTrainer, PotstillSFTTrainer

    t = student.train
    train_rows, dev_rows = split_dev(rows, t.dev_fraction, t.seed)
    attn = attention_for(t)
    if attn == attention.NAME:
        attention.register()
    torch.manual_seed(t.seed)
    tokenizer, model = load_pretrained(student.base.model, attn)
    batching = batching_for(t)
    kd_without = None
    if teacher is not None:
        check_same_tokenizer(student, tokenizer, teacher)
        train_set, kd_without = _kd_dataset(train_rows, tokenizer, teacher)
        dev_set = _kd_dataset(dev_rows, tokenizer, teacher)[0] if dev_rows else None
        cls: Any = PotstillKDTrainer
        extra: dict[str, Any] = {
            # on_policy: the KL alone (cross-entropy on its own samples only reinforces them).
            "kd_alpha": 1.0 if t.loss == "on_policy" else t.kd_alpha,
            "kd_temperature": t.kd_temperature,
            "kd_k": teacher.k,
        }
    else:
        train_set = _dataset(train_rows, tokenizer)
        dev_set = _dataset(dev_rows, tokenizer) if dev_rows else None
        cls, extra = PotstillSFTTrainer, {}
    trainer = cls(
        model=model,
        args=_sft_config(student, output_dir, bool(dev_rows), folder),
        train_dataset=train_set,
        eval_dataset=dev_set,
        processing_class=tokenizer,
        peft_config=_peft_config(student),
        length_grouped=batching == "length_grouped",
        **extra,
    )
    if not console.is_terminal:  # plain progress lines, not a log dict every step
        from transformers.trainer_callback import PrinterCallback

        from potstill.train.trainer import LogProgress

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(LogProgress(f"train[{student.name}]"))
    if folder is not None:
        tracking.attach(trainer, folder, student)
    before = len(trainer.train_dataset)
    fits = lambda row: len(row["input_ids"]) <= t.max_length  # noqa: E731
    trainer.train_dataset = trainer.train_dataset.filter(fits)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = trainer.eval_dataset.filter(fits)
    too_long = before - len(trainer.train_dataset)
    if len(trainer.train_dataset) == 0:
        raise TrainingDataError(
            f"student {student.name}: every training row is longer than max_length={t.max_length}"
        )
    end_ids = end_of_turn_ids(tokenizer, model.generation_config)
    lint_dataset(tokenizer, trainer.train_dataset, end_ids)
    real = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    kept = len(trainer.train_dataset)
    return Prepared(
        trainer, tokenizer, kept, len(dev_rows), too_long, real, batching, attn, kd_without
    )


def _fingerprint(student: StudentConfig, data: StudentRows) -> str:
    payload = json.dumps([student.model_dump(mode="json"), data.digest()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _finished(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The summary of a finished student trained with these settings on these rows."""
    summary_path = folder / "summary.json"
    if not (summary_path.exists() and (folder / "final" / "config.json").exists()):
        return None
    summary = read_record(summary_path, TrainSummary)
    return summary.as_written() if summary.fingerprint == fingerprint else None


def _tidy_checkpoints(ckpt_dir: Path, fingerprint: str, resume: str) -> None:
    """Keep only checkpoints made with the same settings and rows, and no torn one (main
    process only; the others wait)."""
    from potstill.train.trainer import last_complete_checkpoint

    if not is_main_process():
        return
    marker = ckpt_dir / "fingerprint"
    stale = not marker.exists() or marker.read_text() != fingerprint
    if resume == "never" or stale:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    last_complete_checkpoint(ckpt_dir)  # removes a staged, unpublished checkpoint


def _latest(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    found: str | None = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.exists() else None
    return found


def _weights_digest(model: Any) -> str:
    """Identical weights give an identical digest (used to check that DDP ranks agree)."""
    import torch

    with torch.no_grad():
        sums = [p.detach().double().sum() for p in model.parameters()]
        return hashlib.sha256(torch.stack(sums).cpu().numpy().tobytes()).hexdigest()[:16]


def _publish_final(folder: Path, saved: Path, student: StudentConfig, tokenizer: Any) -> None:
    """Turn the trainer's saved output into students/<name>/final (standalone model, LoRA
    merged) and adapter/ (LoRA only), each appearing whole or not at all."""
    final = folder / "final"
    if student.train.method == "lora":
        from peft import PeftModel

        _, base = load_pretrained(student.base.model)
        model = PeftModel.from_pretrained(base, str(saved)).merge_and_unload()
        tmp = folder / f".final.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        shutil.rmtree(folder / "adapter", ignore_errors=True)
        os.replace(saved, folder / "adapter")
    else:
        tmp = saved
        tokenizer.save_pretrained(tmp)
        if not (tmp / "generation_config.json").exists():
            from transformers import GenerationConfig

            GenerationConfig.from_pretrained(tmp).save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _log_entries(trainer: Any) -> list[TrainLogEntry]:
    keys = ("loss", "eval_loss", "train_loss")
    return [
        TrainLogEntry.model_validate(e)
        for e in trainer.state.log_history
        if any(k in e for k in keys)
    ]


def _summary(
    prep: Prepared, result: Any, student: StudentConfig, data: StudentRows, resumed: str | None
) -> dict[str, Any]:
    trainer = prep.trainer
    log = trainer.state.log_history
    losses = [e["loss"] for e in log if "loss" in e]
    evals = [e["eval_loss"] for e in log if "eval_loss" in e]
    seconds = result.metrics.get("train_runtime")
    epochs = student.train.epochs
    done = trainer.state.global_step - (int(resumed.rsplit("-", 1)[1]) if resumed else 0)
    share = done / max(trainer.state.max_steps, 1)
    return {
        "rows": prep.rows,
        "dev_rows": prep.dev_rows,
        "too_long": prep.too_long,
        "data": data.describe(),
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        # warmup_steps=0.05 in the SFT config: ceil(5% of the steps), the first at rate 0.
        "warmup_steps": trainer.args.get_warmup_steps(trainer.state.max_steps),
        "train_loss": result.training_loss,
        "last_loss": losses[-1] if losses else None,
        "eval_loss": evals[-1] if evals else None,
        "seconds": seconds,
        "batching": prep.batching,
        "attention": prep.attention,
        "real_tokens": int(prep.real_tokens * epochs),
        # Tokens the student trained on (once per epoch; under train.max_steps, the rows'
        # mean length times the rows its steps took).
        "tokens_seen": _tokens_seen(prep, trainer, student),
        "real_tokens_per_second": (prep.real_tokens * epochs * share / seconds)
        if seconds
        else None,
        "resumed_from": resumed,
        "world_size": trainer.accelerator.num_processes,
        "method": student.train.method,
        "loss": student.train.loss,
        "kd_rows_without_teacher": prep.kd_without,
        "base": student.base.model,
    }


def _tokens_seen(prep: Prepared, trainer: Any, student: StudentConfig) -> int:
    t = student.train
    if t.max_steps is None:
        return int(prep.real_tokens * t.epochs)
    world = trainer.accelerator.num_processes
    rows = trainer.state.global_step * t.batch_size * t.gradient_accumulation_steps * world
    return int(prep.real_tokens * rows / max(prep.rows, 1))


def _agreeing_ranks(trainer: Any) -> list[str] | None:
    """Under data parallelism (every rank holds every weight), each rank's weights digest;
    ranks that disagree are an error. None with one process or sharded weights."""
    if trainer.accelerator.num_processes == 1 or trainer.is_fsdp_enabled:
        return None
    if trainer.is_deepspeed_enabled:
        return None
    from accelerate.utils import gather_object

    digests: list[str] = gather_object([_weights_digest(trainer.model)])
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
    return digests


def _train_one(
    folder: Path,
    student: StudentConfig,
    data: StudentRows,
    fingerprint: str,
    checks: ChecksConfig,
    teacher: Any = None,
) -> dict[str, Any]:
    ckpt_dir = folder / "checkpoints"
    prep = build_trainer(student, data.rows, ckpt_dir, folder, teacher)
    trainer = prep.trainer
    _tidy_checkpoints(ckpt_dir, fingerprint, student.train.resume)
    trainer.accelerator.wait_for_everyone()
    last = _latest(ckpt_dir)
    if last:
        console.print(f"train[{student.name}]: resuming from {last}")
    result = trainer.train(resume_from_checkpoint=last)
    if trainer.eval_dataset is not None:
        trainer.evaluate()
    ranks = _agreeing_ranks(trainer)
    summary = _summary(prep, result, student, data, last)
    summary.update(fingerprint=fingerprint, rank_weights=ranks)
    # The guard rails' figures and warnings (potstill/guards.py), for the CLI and the report.
    log = _log_entries(trainer)
    summary["checks"] = student_figures(
        summary["rows"], summary["steps"], summary["warmup_steps"], log
    )
    summary["warnings"] = student_warnings(student.name, summary["checks"], checks)
    saved = folder / ".trained"
    trainer.save_model(str(saved))  # every rank: FSDP and DeepSpeed gather the weights here
    trainer.accelerator.wait_for_everyone()
    if is_main_process():
        write_records(folder / "train_log.jsonl", log)
        tokenizer = prep.tokenizer
        del trainer, prep
        release_memory()
        _publish_final(folder, saved, student, tokenizer)
        write_record(folder / "summary.json", TrainSummary.model_validate(summary))
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def _teacher_distributions(
    run: RunFolder, student: StudentConfig, fingerprint: str
) -> tuple[Any, str]:
    """synth/logprobs.npz, read, and the fingerprint that covers it too."""
    from potstill.synth.logprobs import FILE, read

    path = run.synth_dir / FILE
    if not path.exists():
        raise TrainingDataError(
            f"student {student.name}: train.loss {student.train.loss} needs the teacher's "
            f"token distributions, and {path} does not exist: set synth.logprobs and run "
            f"`potstill synth {run.root}` again"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    combined = hashlib.sha256(f"{fingerprint}:{digest}".encode()).hexdigest()[:16]
    return read(path), combined


def train_student(
    run: RunFolder, config: RunConfig, task: Task, student: StudentConfig
) -> dict[str, Any]:
    """Fine-tune one student on its rows; a finished student with the same settings and rows
    is kept, an interrupted one resumes from its last complete checkpoint."""
    folder = run.student_dir(student.name)
    data = student_rows(run, config, task, student)
    if is_main_process() and student.train.loss != "on_policy":  # it writes its samples
        write_training_rows(folder / "train.jsonl", data.rows)
    if not data.rows:
        raise TrainingDataError(
            f"student {student.name}: no training rows (source {data.source}, "
            f"left out: {dict(data.skipped)})"
        )
    fingerprint = _fingerprint(student, data)
    teacher = None
    if student.train.loss == "kd":
        teacher, fingerprint = _teacher_distributions(run, student, fingerprint)
    finished = _finished(folder, fingerprint)
    if student.train.loss == "on_policy" and not (finished and student.train.resume == "auto"):
        from potstill.train.on_policy import on_policy_rows

        records = {r.id: r for r in read_records(run.synth_dir / "teacher.jsonl", TeacherRow)}
        samples, teacher = on_policy_rows(run, config, task, student, data.rows, records)
        data = StudentRows(samples, "student_samples", data.target, None, data.skipped)
        if is_main_process():
            write_training_rows(folder / "train.jsonl", data.rows)
    if finished and student.train.resume == "auto":
        console.print(f"train[{student.name}]: up to date, kept")
        return finished
    say(train_start_sentence(student.name, len(data.rows), data.source, data.target, data.skipped))
    summary = _train_one(folder, student, data, fingerprint, config.checks, teacher)
    if is_main_process():
        say(train_end_sentence(student.name, summary))
        for line in warning_lines(f"train[{student.name}]", summary["warnings"]):
            say(line)
    return summary


def train_students(run: RunFolder, config: RunConfig, task: Task) -> dict[str, Any]:
    """Train every student of the run (the method's comparison when there are several)."""
    return {s.name: train_student(run, config, task, s) for s in config.students}
