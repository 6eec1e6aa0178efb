"""The evaluate stage: every candidate answers the test split; scores with intervals."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import numpy as np

from potstill.config import ModelConfig, PromptConfig, RunConfig
from potstill.evaluate.metrics import CandidateScores, headline, score_candidate
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
    run: RunFolder,
    task: Task,
    candidate: Candidate,
    test: list[Example],
    samples: int = 2000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], CandidateScores]:
    """The candidate's replies on the test split, parsed and scored by the task's metrics."""
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
    parsed = [task.parse(r.text or "", prompt.style, e.inputs) for e, r in zip(test, replies)]
    loose = [
        task.parse_flexible(r.text or "", prompt.style, e.inputs) for e, r in zip(test, replies)
    ]
    scores = score_candidate(task, parsed, test, samples, seed)
    # The flexible reading only differs on some replies; only those are scored again.
    differs = [i for i, (a, b) in enumerate(zip(parsed, loose)) if a != b]
    rescored = task.example_scores([loose[i] for i in differs], [test[i] for i in differs])
    flexible_scores = list(scores.per_example)
    for i, values in zip(differs, rescored):
        flexible_scores[i] = values
    rows = []
    for i, (example, reply) in enumerate(zip(test, replies)):
        rows.append(
            {
                "id": example.id,
                "reply": reply.text,
                "error": reply.error,
                "status": parsed[i].status if reply.error is None else "call_failed",
                "answer": parsed[i].answer,
                "raw_answer": parsed[i].raw_answer,
                "reference": example.reference,
                # score: the task's headline metric (accuracy for answers that are right or
                # wrong); scores: every per-example metric, for comparisons per metric.
                "score": headline(task, scores.per_example[i]),
                "flexible_score": headline(task, flexible_scores[i]),
                "scores": scores.per_example[i],
                "finish_reason": reply.finish_reason,
                "completion_tokens": reply.completion_tokens,
                "prompt_tokens": reply.prompt_tokens,
                "latency_s": reply.latency_s,
            }
        )
    return rows, scores


# Keys of scores.json that only mean something when replies are right or wrong.
EXACT_KEYS = (
    "accuracy",
    "ci_low",
    "ci_high",
    "flexible_accuracy",
    "flexible_ci_low",
    "flexible_ci_high",
)


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
    headline_name = task.metrics[0].name
    found = candidates(run, config)
    rows: list[dict[str, Any]] = []
    for cand in found:
        rows, scores = predict(run, task, cand, test, samples, seed)
        write_jsonl(run.eval_dir / "predictions" / f"{cand.name}.jsonl", rows)
        summary = summarize(rows, samples, seed)
        if not task.reference_match:  # open text: no answer is right or wrong, see metrics
            summary.update(dict.fromkeys(EXACT_KEYS))
        summary.update(scores.details, metrics=scores.metrics)
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
    scored = any(r["score"] is not None for r in rows)
    for cand in (c for c in found if c.role == "student" and scored):
        for other in (cand.base or "base_student", "teacher"):
            comp = paired_comparison(per_candidate[cand.name], per_candidate[other], samples, seed)
            flexible = paired_comparison(
                per_candidate_flexible[cand.name], per_candidate_flexible[other], samples, seed
            )
            results["comparisons"].append(
                {"a": cand.name, "b": other, "metric": headline_name, **comp, "flexible": flexible}
            )
    results["order"] = [c.name for c in found]
    results["task"] = task.kind
    results["headline"] = headline_name
    # scores.json is written with sorted keys; this keeps the task's own order for the report
    results["metric_order"] = [m.name for m in task.metrics]
    results["calculator"] = config.task.calculator
    write_json(run.eval_dir / "scores.json", results)
    return results
