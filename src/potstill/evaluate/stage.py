"""The evaluate stage: every candidate answers the test split; scores with intervals."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import numpy as np

from potstill.config import ModelConfig, PromptConfig, RunConfig
from potstill.evaluate.stats import bootstrap_ci, paired_comparison
from potstill.models import build_model, chunk_size
from potstill.models.callstore import CallStore, answer_all
from potstill.progress import progress_bar
from potstill.runs import RunFolder, write_json, write_jsonl
from potstill.tasks import Example, Task
from potstill.tasks.base import chat_requests


@dataclass(frozen=True)
class Candidate:
    """A model, the way it is asked, and its role in the comparison."""

    name: str
    role: str  # teacher | base_student | student
    model: ModelConfig
    prompt: PromptConfig
    ref: str | None = None  # a trained student's folder, in place of model.model
    procedure: str | None = None
    base: str | None = None  # for a trained student: the name of its base candidate


def candidates(run: RunFolder, config: RunConfig) -> list[Candidate]:
    found = [
        Candidate(
            "teacher",
            "teacher",
            config.teacher.model,
            config.teacher.prompt,
            procedure=config.teacher.procedure,
        ),
    ]
    distinct = list(dict.fromkeys(s.base.model for s in config.students))
    base_names: dict[str, str] = {}
    for student in config.students:
        model = student.base.model
        if model not in base_names:
            name = "base_student" if len(distinct) == 1 else f"base_student{distinct.index(model)}"
            base_names[model] = name
            found.append(Candidate(name, "base_student", student.base, config.synth.prompt))
        found.append(
            Candidate(
                student.name,
                "student",
                student.base,
                config.synth.prompt,
                ref=str(run.student_dir(student.name) / "final"),
                base=base_names[model],
            )
        )
    return found


def predict(
    run: RunFolder, task: Task, candidate: Candidate, test: list[Example]
) -> list[dict[str, Any]]:
    prompt = candidate.prompt
    requests = chat_requests(task, prompt, test)
    model = build_model(candidate.model, candidate.ref)
    store = CallStore(run.calls_db)
    try:
        with progress_bar(f"evaluate: {candidate.name}", len(requests)) as advance:
            replies = answer_all(model, store, requests, chunk_size(candidate.model), advance)
    finally:
        store.close()
        del model
        gc.collect()
    rows = []
    for example, reply in zip(test, replies):
        parsed = task.parse(reply.text or "", prompt.style)
        loose = task.parse_flexible(reply.text or "", prompt.style)
        score = flexible = None
        if example.reference is not None:
            score = task.score(parsed, example.reference)
            flexible = task.score(loose, example.reference)
        rows.append(
            {
                "id": example.id,
                "reply": reply.text,
                "error": reply.error,
                "status": parsed.status if reply.error is None else "call_failed",
                "answer": parsed.answer,
                "raw_answer": parsed.raw_answer,
                "reference": example.reference,
                "score": score,
                "flexible_score": flexible,
                "finish_reason": reply.finish_reason,
                "completion_tokens": reply.completion_tokens,
                "prompt_tokens": reply.prompt_tokens,
                "latency_s": reply.latency_s,
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]], samples: int, seed: int) -> dict[str, Any]:
    scores = [r["score"] for r in rows if r["score"] is not None]
    flexible = [r["flexible_score"] for r in rows if r["flexible_score"] is not None]
    low, high = bootstrap_ci(scores, samples, seed)
    flex_low, flex_high = bootstrap_ci(flexible, samples, seed)
    statuses = [r["status"] for r in rows]
    latency = [r["latency_s"] for r in rows]
    tokens = [r["completion_tokens"] for r in rows]
    return {
        "n": len(scores),
        "accuracy": float(np.mean(scores)) if scores else None,
        "ci_low": low,
        "ci_high": high,
        # Strict parsing decides `accuracy`; the flexible reading is reported beside it so a
        # format failure is not mistaken for a reasoning failure (or the other way round).
        "flexible_accuracy": float(np.mean(flexible)) if flexible else None,
        "flexible_ci_low": flex_low,
        "flexible_ci_high": flex_high,
        **{
            f"{s}_rate": statuses.count(s) / len(rows)
            for s in ("no_answer", "malformed", "call_failed")
        },
        "mean_completion_tokens": float(np.mean(tokens)),
        "mean_prompt_tokens": float(np.mean([r["prompt_tokens"] for r in rows])),
        "mean_latency_s": float(np.mean(latency)),
        "p95_latency_s": float(np.quantile(latency, 0.95)),
    }


def run_evaluate(
    run: RunFolder, config: RunConfig, task: Task, test: list[Example]
) -> dict[str, Any]:
    """Predict with each candidate, score, and compare students with base and teacher."""
    per_candidate: dict[str, list[float]] = {}
    per_candidate_flexible: dict[str, list[float]] = {}
    results: dict[str, Any] = {"candidates": {}, "comparisons": []}
    samples, seed = config.evaluate.bootstrap_samples, config.evaluate.seed
    found = candidates(run, config)
    for cand in found:
        rows = predict(run, task, cand, test)
        write_jsonl(run.eval_dir / "predictions" / f"{cand.name}.jsonl", rows)
        summary = summarize(rows, samples, seed)
        summary.update(
            role=cand.role,
            model=cand.ref or cand.model.model,
            backend=cand.model.backend,
            prompt_style=cand.prompt.style,
            shots=len(cand.prompt.shots),
            procedure=cand.procedure,
        )
        results["candidates"][cand.name] = summary
        per_candidate[cand.name] = [r["score"] or 0.0 for r in rows]
        per_candidate_flexible[cand.name] = [r["flexible_score"] or 0.0 for r in rows]
    for cand in (c for c in found if c.role == "student"):
        for other in (cand.base or "base_student", "teacher"):
            comp = paired_comparison(per_candidate[cand.name], per_candidate[other], samples, seed)
            flexible = paired_comparison(
                per_candidate_flexible[cand.name], per_candidate_flexible[other], samples, seed
            )
            results["comparisons"].append(
                {"a": cand.name, "b": other, **comp, "flexible": flexible}
            )
    results["order"] = [c.name for c in found]
    results["calculator"] = config.task.calculator
    write_json(run.eval_dir / "scores.json", results)
    return results
