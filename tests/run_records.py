"""Records for tests that need a stage's file without running the stage (a teacher's replies,
a trained student's summary): built through the records' models, with every key the stage
writes, so a file a test makes can never drift from the ones the stages write."""

from __future__ import annotations

from typing import Any

from potstill.records import SynthSummary, TeacherRow, TrainLogEntry, TrainSummary


def teacher_row(**fields: Any) -> TeacherRow:
    """A synth/teacher.jsonl row: an answered input unless `fields` say otherwise."""
    row: dict[str, Any] = {
        "id": "x",
        "origin": "train",
        "inputs": {"text": "..."},
        "reference": None,
        "reply": "...",
        "status": "ok",
        "answer": None,
        "raw_answer": None,
        "rationale": None,
        "finish_reason": "stop",
        "error": None,
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "cost_usd": 0.0,
        "rejected": None,
    }
    return TeacherRow.model_validate({**row, **fields})


def train_summary(**fields: Any) -> TrainSummary:
    """A students/<name>/summary.json: a small sft LoRA run unless `fields` say otherwise."""
    summary: dict[str, Any] = {
        "rows": 100,
        "dev_rows": 0,
        "too_long": 0,
        "data": {"source": "synth", "target": "answer", "rows": 100, "skipped": {}},
        "steps": 32,
        "max_steps": 32,
        "warmup_steps": 2,
        "train_loss": 1.0,
        "last_loss": 0.5,
        "eval_loss": None,
        "seconds": 10.0,
        "batching": "padded",
        "attention": "sdpa",
        "real_tokens": 10_000,
        "tokens_seen": 10_000,
        "real_tokens_per_second": 1000.0,
        "resumed_from": None,
        "world_size": 1,
        "method": "lora",
        "loss": "sft",
        "kd_rows_without_teacher": None,
        "base": "packaged:smollm2-135m-instruct",
        "fingerprint": "0" * 16,
        "rank_weights": None,
        "checks": {},
        "warnings": [],
    }
    return TrainSummary.model_validate({**summary, **fields})


def train_log(*entries: dict[str, Any]) -> list[TrainLogEntry]:
    """train_log.jsonl entries, numbered by step where they give none."""
    return [TrainLogEntry.model_validate({"step": i + 1, **e}) for i, e in enumerate(entries)]


def synth_summary(**fields: Any) -> SynthSummary:
    """A synth/summary.json: 40 inputs, 30 kept, no calls failed, unless `fields` say
    otherwise."""
    summary: dict[str, Any] = {
        "inputs": 40,
        "inputs_without_reference": 0,
        "generated_inputs": 0,
        "accepted": 30,
        "rejected": {"disagrees_with_reference": 10},
        "generation_rejected": {},
        "samples": 1,
        "teacher_accuracy_on_train": 0.75,
        "calls": 40,
        "failed_calls": 0,
        "failed_rows": 0,
        "teacher_completion_tokens": 400,
        "cost_usd": 0.0,
        "cost": {
            "calls": 40,
            "prompt_tokens": 4000,
            "completion_tokens": 400,
            "usd": 0.0,
            "sent_this_run": {"calls": 40, "prompt_tokens": 4000, "completion_tokens": 400},
            "priced": False,
            "mode": "online",
            "max_usd": None,
        },
        "checks": {},
        "warnings": [],
    }
    return SynthSummary.model_validate({**summary, **fields})
