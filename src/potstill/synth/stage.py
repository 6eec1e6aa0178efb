"""The synth stage: the teacher labels the training inputs; filtered rows become train.jsonl."""

from __future__ import annotations

from collections import Counter
from typing import Any

from potstill.config import RunConfig
from potstill.models import build_model, chunk_size
from potstill.models.callstore import CallStore, answer_all
from potstill.progress import console, progress_bar
from potstill.runs import RunFolder, atomic_write_text, write_json, write_jsonl
from potstill.tasks import Example, Parsed, Task
from potstill.tasks.base import chat_requests


def rejection_reason(
    parsed: Parsed, finish: str, error: str | None, example: Example, task: Task, config: RunConfig
) -> str | None:
    """Why a teacher reply cannot be a training row, or None when it can."""
    if error:
        return "call_failed"
    if finish != "stop":
        return f"finish_{finish}"
    if parsed.status != "ok":
        return parsed.status
    if config.synth.target == "rationale_answer" and not parsed.rationale:
        return "no_rationale"
    if (
        config.synth.require_reference_match
        and task.reference_match
        and example.reference is not None
        and task.score(parsed, example.reference) < 1.0
    ):
        return "disagrees_with_reference"
    return None


def training_row(task: Task, config: RunConfig, example: Example, parsed: Parsed) -> dict[str, Any]:
    """A conversational prompt/completion row, in the form TRL's SFTTrainer takes."""
    prompt = config.synth.prompt
    # The student learns the answer as the teacher wrote it (an expression, when a
    # calculator is in use), with the rationale only for target=rationale_answer.
    answer = parsed.raw_answer if parsed.raw_answer is not None else str(parsed.answer)
    reason = parsed.rationale if config.synth.target == "rationale_answer" else None
    return {
        "id": example.id,
        "prompt": task.messages(example.inputs, prompt),
        "completion": [
            {"role": "assistant", "content": task.reply_text(answer.strip(), reason, prompt.style)}
        ],
    }


def run_synth(
    run: RunFolder, config: RunConfig, task: Task, train: list[Example]
) -> dict[str, Any]:
    """Label `train` with the teacher; write teacher.jsonl, rejected.jsonl, train.jsonl, card."""
    requests = chat_requests(task, config.teacher.prompt, train)
    teacher = build_model(config.teacher.model)
    store = CallStore(run.calls_db)
    try:
        with progress_bar("synth: teacher labels training inputs", len(requests)) as advance:
            replies = answer_all(
                teacher, store, requests, chunk_size(config.teacher.model), advance
            )
    finally:
        store.close()
    outputs: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    correct: list[float] = []
    reasons: Counter[str] = Counter()
    for example, reply in zip(train, replies):
        parsed = task.parse(reply.text or "", config.teacher.prompt.style, example.inputs)
        if example.reference is not None and task.reference_match:
            correct.append(task.score(parsed, example.reference))
        reason = rejection_reason(parsed, reply.finish_reason, reply.error, example, task, config)
        record = {
            "id": example.id,
            "inputs": example.inputs,
            "reference": example.reference,
            "reply": reply.text,
            "status": parsed.status,
            "answer": parsed.answer,
            "raw_answer": parsed.raw_answer,
            "rationale": parsed.rationale,
            "finish_reason": reply.finish_reason,
            "error": reply.error,
            "completion_tokens": reply.completion_tokens,
            "rejected": reason,
        }
        outputs.append(record)
        if reason:
            reasons[reason] += 1
            rejected.append(record)
        else:
            rows.append(training_row(task, config, example, parsed))
    summary = {
        "inputs": len(train),
        "accepted": len(rows),
        "rejected": dict(reasons),
        "teacher_accuracy_on_train": sum(correct) / len(correct) if correct else None,
        "failed_calls": reasons.get("call_failed", 0),
        "teacher_completion_tokens": sum(r.completion_tokens for r in replies),
    }
    write_jsonl(run.synth_dir / "teacher.jsonl", outputs)
    write_jsonl(run.synth_dir / "rejected.jsonl", rejected)
    write_jsonl(run.synth_dir / "train.jsonl", rows)
    write_json(run.synth_dir / "summary.json", summary)
    atomic_write_text(run.synth_dir / "card.md", _card(config, summary, rejected))
    console.print(f"synth: {len(rows)} of {len(train)} rows accepted; rejected: {dict(reasons)}")
    if not rows:
        raise RuntimeError(
            "synth: the teacher produced no usable training row; see "
            f"{run.synth_dir / 'rejected.jsonl'}"
        )
    return summary


def _card(config: RunConfig, summary: dict[str, Any], rejected: list[dict[str, Any]]) -> str:
    acc = summary["teacher_accuracy_on_train"]
    lines = [
        "# Synthetic data card",
        "",
        f"- teacher: `{config.teacher.model.model}` ({config.teacher.model.backend}), "
        f"prompt style `{config.teacher.prompt.style}`, {len(config.teacher.prompt.shots)} shots",
        f"- procedure: {config.teacher.procedure or 'as configured'}",
        f"- training target: `{config.synth.target}`",
        f"- inputs: {summary['inputs']}, accepted: {summary['accepted']}",
        f"- teacher accuracy against the references: {'n/a' if acc is None else f'{acc:.1%}'}",
        "",
        "| rejected because | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(summary["rejected"].items())],
        "",
        "## Examples of rejected rows",
        "",
    ]
    for row in rejected[:5]:
        reply = (row["reply"] or row["error"] or "").replace("\n", " ")[:200]
        lines.append(f"- `{row['id']}` ({row['rejected']}): {reply}")
    return "\n".join(lines) + "\n"
