"""The evaluate stage: every candidate answers the test split; metrics with intervals, the
LLM judge, paired comparisons, cost and latency, and the pitfall checks."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from potstill.config import ModelConfig, PromptConfig, RunConfig
from potstill.data.sets import describe
from potstill.errors import StageIncomplete
from potstill.evaluate.answers import answer_cached
from potstill.evaluate.cost import cost_and_latency
from potstill.evaluate.metrics import CandidateScores, headline, score_candidate
from potstill.evaluate.pitfalls import find_pitfalls, judge_trust, set_judge_aside
from potstill.evaluate.stats import (
    metric_entry,
    paired_comparison,
    paired_difference,
)
from potstill.models import ChatModel
from potstill.models.packaged import release_memory
from potstill.records import (
    ErrorRow,
    JudgeRecord,
    Prediction,
    Scores,
    error_row,
    write_record,
    write_records,
)
from potstill.runs import RunFolder
from potstill.tasks import Example, Task
from potstill.tasks.base import chat_requests

# Per-example scores that are rates in [0, 1], shown as percentages.
PERCENT_METRICS = {"accuracy", "flexible_accuracy", "judge_win_rate", "macro_f1"}


@dataclass(frozen=True)
class Candidate:
    """A model, the way it is asked, and its role in the comparison."""

    name: str
    role: str  # teacher | base_student | student | extra
    model: ModelConfig
    prompt: PromptConfig
    ref: str | None = None  # a trained student's folder, in place of model.model
    procedure: str | None = None
    base: str | None = None  # for a trained student: the name of its base candidate


def candidate_identity(cand: Candidate) -> str:
    """A hash of what decides a candidate's replies: the model (a trained student's folder,
    else backend, name and endpoint) and the prompt it is asked with. Two candidates with the
    same identity (the base student and the teacher asked zero-shot, when both are the same
    model) answer alike, and the report's verdict shows them once."""
    asked = {
        "model": cand.ref or cand.model.model,
        "backend": cand.model.backend,
        "base_url": cand.model.base_url,
        "prompt": cand.prompt.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:16]


def teacher_zero_shot_prompt(config: RunConfig) -> PromptConfig:
    """The teacher asked plainly: the students' prompt when that is zero-shot (so teacher and
    students answer the very same requests), else the task's zero-shot prompt."""
    student = config.synth.prompt
    if student.style == "zero_shot" and not student.shots:
        return student
    return PromptConfig(style="zero_shot", max_tokens=config.teacher.prompt.max_tokens)


def candidates(run: RunFolder, config: RunConfig) -> list[Candidate]:
    teacher = config.teacher
    found = [
        Candidate("teacher", "teacher", teacher.model, teacher.prompt, procedure=teacher.procedure)
    ]
    zero_shot = teacher_zero_shot_prompt(config)
    if config.evaluate.teacher_zero_shot and zero_shot != teacher.prompt:
        found.append(
            Candidate(
                "teacher_zero_shot", "teacher", teacher.model, zero_shot, procedure="zero-shot"
            )
        )
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
    for extra in config.evaluate.candidates:
        found.append(
            Candidate(extra.name, "extra", extra.model, extra.prompt or config.synth.prompt)
        )
    return found


def predict(
    run: RunFolder,
    task: Task,
    candidate: Candidate,
    test: list[Example],
    samples: int = 2000,
    seed: int = 0,
    loaded: dict[str, ChatModel] | None = None,
    label: str | None = None,
) -> tuple[list[dict[str, Any]], CandidateScores]:
    """The candidate's reply to every example of `test` (the test split or a transfer set),
    parsed and scored by the task's metrics. Replies come from the call store when they are
    there; the model is loaded only for the calls that are not (and kept in `loaded`, when
    given, for the candidate's next set)."""
    prompt = candidate.prompt
    requests = chat_requests(task, prompt, test)
    replies = answer_cached(
        run,
        candidate.model,
        requests,
        label or f"evaluate: {candidate.name}",
        candidate.ref,
        loaded,
    )
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
        row_scores = dict(scores.per_example[i])
        flexible = headline(task, flexible_scores[i])
        if task.reference_match and flexible is not None:
            # The looser reading, as its own metric, so a format failure is not mistaken for
            # a reasoning failure (or the other way round).
            row_scores[f"flexible_{task.metrics[0].name}"] = flexible
        rows.append(
            {
                "id": example.id,
                "reply": reply.text,
                "error": reply.error,
                "error_kind": reply.error_kind,
                "attempts": reply.attempts,
                "status": parsed[i].status if reply.error is None else "call_failed",
                "answer": parsed[i].answer,
                "raw_answer": parsed[i].raw_answer,
                "flexible_answer": loose[i].answer if loose[i].ok else None,
                "reference": example.reference,
                # score: the task's headline metric (accuracy for answers that are right or
                # wrong); scores: every per-example metric, for comparisons per metric.
                "score": headline(task, scores.per_example[i]),
                "flexible_score": flexible,
                "scores": row_scores,
                "finish_reason": reply.finish_reason,
                "completion_tokens": reply.completion_tokens,
                "prompt_tokens": reply.prompt_tokens,
                "latency_s": reply.latency_s,
            }
        )
    return rows, scores


def metrics(rows: list[dict[str, Any]], samples: int, seed: int) -> dict[str, Any]:
    """Every per-example score of the rows, as a mean with its 95% bootstrap interval."""
    names = list(dict.fromkeys(m for r in rows for m in r.get("scores", {})))
    return {
        name: metric_entry(
            [r["scores"][name] for r in rows if name in r.get("scores", {})],
            samples,
            seed,
            percent=name in PERCENT_METRICS,
        )
        for name in names
    }


def summarize(rows: list[dict[str, Any]], samples: int, seed: int) -> dict[str, Any]:
    """The rates, tokens and latency of a candidate's rows, and `metrics` (every per-example
    score with its interval: `accuracy` and, beside it, `flexible_accuracy`, so a format
    failure is not mistaken for a reasoning failure, or the other way round)."""
    scores = [r["score"] for r in rows if r["score"] is not None]
    statuses = [r["status"] for r in rows]
    latency = [r["latency_s"] for r in rows]
    tokens = [r["completion_tokens"] for r in rows]
    return {
        "n": len(scores),
        **{
            f"{s}_rate": statuses.count(s) / len(rows)
            for s in ("no_answer", "malformed", "call_failed")
        },
        "mean_completion_tokens": float(np.mean(tokens)),
        "mean_prompt_tokens": float(np.mean([r["prompt_tokens"] for r in rows])),
        "mean_latency_s": float(np.mean(latency)),
        "p95_latency_s": float(np.quantile(latency, 0.95)),
        "metrics": metrics(rows, samples, seed),
    }


def compare_metrics(
    a: list[dict[str, Any]], b: list[dict[str, Any]], samples: int, seed: int
) -> dict[str, Any]:
    """Each metric both candidates have, paired on the examples both have it for: the
    interval of the difference (`stats.paired_difference`), and exact McNemar for 0/1
    scores."""
    other = {r["id"]: r.get("scores", {}) for r in b}
    names = list(dict.fromkeys(m for r in a for m in r.get("scores", {})))
    found: dict[str, Any] = {}
    for name in names:
        pairs = [
            (r["scores"][name], other[r["id"]][name])
            for r in a
            if name in r.get("scores", {}) and name in other.get(r["id"], {})
        ]
        if not pairs:
            continue
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        found[name] = paired_difference(xs, ys, samples, seed)
    return found


def _scored_pairs(
    a: list[dict[str, Any]], b: list[dict[str, Any]], key: str
) -> tuple[list[float], list[float]]:
    """Both candidates' `key` scores on the examples where both have one: an example without
    a reference is left out of the comparison, never counted as wrong for both."""
    pairs = [(x[key], y[key]) for x, y in zip(a, b) if x[key] is not None and y[key] is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def comparisons(
    found: list[Candidate],
    predictions: dict[str, list[dict[str, Any]]],
    samples: int,
    seed: int,
    metric: str,
) -> list[dict[str, Any]]:
    """Every trained student against its base student, against the teacher (both ways of
    asking it) and against each student trained before it (several students of one run, such
    as one per loss: `kd` against `sft`), on the same examples."""
    results = []
    teachers = [c.name for c in found if c.role == "teacher"]
    scored = any(r["score"] is not None for rows in predictions.values() for r in rows)
    students = [c for c in found if c.role == "student" and scored]
    for i, cand in enumerate(students):
        earlier = [s.name for s in students[:i]]
        for other in (cand.base or "base_student", *teachers, *earlier):
            a, b = predictions[cand.name], predictions[other]
            strict = paired_comparison(*_scored_pairs(a, b, "score"), samples, seed)
            flexible = paired_comparison(*_scored_pairs(a, b, "flexible_score"), samples, seed)
            results.append(
                {
                    "a": cand.name,
                    "b": other,
                    "metric": metric,
                    **strict,
                    "flexible": flexible,
                    "metrics": compare_metrics(a, b, samples, seed),
                }
            )
    return results


def candidate_summary(
    task: Task,
    config: RunConfig,
    cand: Candidate,
    rows: list[dict[str, Any]],
    scores: CandidateScores,
) -> dict[str, Any]:
    """A candidate's entry in scores.json for one evaluation set: its metrics with their
    intervals, rates, how it was asked, cost and latency."""
    samples, seed = config.evaluate.bootstrap_samples, config.evaluate.seed
    summary = summarize(rows, samples, seed)
    # The task's own metrics (corpus ones such as macro-F1 resampled as a whole) first,
    # then what only the rows carry (the judge's scores).
    own = {
        name: {**entry, "percent": name in PERCENT_METRICS}
        for name, entry in scores.metrics.items()
    }
    summary["metrics"] = {
        **own,
        **{k: v for k, v in summary["metrics"].items() if k not in own},
    }
    summary.update(scores.details)
    summary.update(
        role=cand.role,
        model=cand.ref or cand.model.model,
        backend=cand.model.backend,
        prompt_style=cand.prompt.style,
        shots=len(cand.prompt.shots),
        max_tokens=cand.prompt.max_tokens,
        procedure=cand.procedure,
        base=cand.base,
        identity=candidate_identity(cand),
        **cost_and_latency(rows, cand.model, config.evaluate.local_price_per_hour),
    )
    return summary


Predicted = dict[str, tuple[list[dict[str, Any]], CandidateScores]]


def predict_all(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    found: list[Candidate],
    test: list[Example],
    transfer: dict[str, list[Example]],
) -> tuple[Predicted, dict[str, Predicted]]:
    """Every candidate on the test split and on each transfer set, one candidate at a time,
    so each model is loaded at most once and freed before the next."""
    samples, seed = config.evaluate.bootstrap_samples, config.evaluate.seed
    on_test: Predicted = {}
    on_transfer: dict[str, Predicted] = {name: {} for name in transfer}
    for cand in found:
        loaded: dict[str, ChatModel] = {}
        on_test[cand.name] = predict(run, task, cand, test, samples, seed, loaded)
        for name, examples in transfer.items():
            label = f"evaluate: {cand.name} on {name}"
            on_transfer[name][cand.name] = predict(
                run, task, cand, examples, samples, seed, loaded, label
            )
        loaded.clear()
        release_memory()
    return on_test, on_transfer


def score_transfer_set(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    found: list[Candidate],
    name: str,
    examples: list[Example],
    predicted: Predicted,
) -> dict[str, Any]:
    """One transfer set's results, shaped like the test split's: every candidate's metrics
    with intervals and the same paired comparisons (ground-truth metrics only: the judge
    scores the test split alone, which bounds its cost). Predictions go to
    eval/transfer/<name>/predictions/<candidate>.jsonl."""
    samples, seed = config.evaluate.bootstrap_samples, config.evaluate.seed
    source = next(t for t in config.evaluate.transfer if t.name == name)
    folder = transfer_predictions_dir(run, name)
    rows = {cand: cand_rows for cand, (cand_rows, _) in predicted.items()}
    for cand in found:
        write_predictions(folder / f"{cand.name}.jsonl", rows[cand.name])
    return {
        "source": describe(source, config.dataset),
        "n": len(examples),
        "candidates": {
            cand.name: candidate_summary(task, config, cand, *predicted[cand.name])
            for cand in found
        },
        "comparisons": comparisons(found, rows, samples, seed, task.metrics[0].name),
    }


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """A candidate's prediction rows, one `Prediction` a line."""
    write_records(path, [Prediction.model_validate(row) for row in rows])


def transfer_predictions_dir(run: RunFolder, name: str) -> Path:
    """Where a transfer set's predictions are: eval/predictions/ holds the test split's."""
    return run.eval_dir / "transfer" / name / "predictions"


def _drop_stale_transfer(run: RunFolder, names: list[str]) -> None:
    """Results of transfer sets no longer configured are removed, never left to mislead."""
    folder = run.eval_dir / "transfer"
    for path in folder.iterdir() if folder.exists() else []:
        if path.name not in names:
            shutil.rmtree(path)


def run_evaluate(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    test: list[Example],
    transfer: dict[str, list[Example]] | None = None,
) -> dict[str, Any]:
    """Predict with each candidate, judge, score, compare, price and check for pitfalls, on
    the test split; score and compare again on each transfer set (`transfer` in scores.json)."""
    samples, seed = config.evaluate.bootstrap_samples, config.evaluate.seed
    transfer = transfer or {}
    headline_name = task.metrics[0].name
    found = candidates(run, config)
    predicted, on_transfer = predict_all(run, config, task, found, test, transfer)
    predictions = {name: rows for name, (rows, _) in predicted.items()}
    judged: dict[str, Any] | None = None
    if config.judge.enabled:
        from potstill.evaluate.judgments import run_judge

        judged = run_judge(run, config, task, test, predictions)
        for name, records in judged["records"].items():
            write_records(
                run.eval_dir / "judge" / f"{name}.jsonl",
                [JudgeRecord.model_validate(record) for record in records],
            )
    results: dict[str, Any] = {"candidates": {}}
    for cand in found:
        rows = predictions[cand.name]
        write_predictions(run.eval_dir / "predictions" / f"{cand.name}.jsonl", rows)
        summary = candidate_summary(task, config, cand, *predicted[cand.name])
        if judged is not None:
            summary["judge"] = judged["candidates"][cand.name]
        results["candidates"][cand.name] = summary
    results["comparisons"] = comparisons(found, predictions, samples, seed, headline_name)
    _drop_stale_transfer(run, list(transfer))
    if transfer:
        results["transfer"] = {
            name: score_transfer_set(run, config, task, found, name, examples, on_transfer[name])
            for name, examples in transfer.items()
        }
    results["order"] = [c.name for c in found]
    results["task"] = task.kind
    results["headline"] = headline_name
    # scores.json is written with sorted keys; this keeps the task's own order for the report
    results["metric_order"] = [m.name for m in task.metrics]
    results["calculator"] = config.task.calculator
    results["local_price_per_hour"] = config.evaluate.local_price_per_hour
    if judged is not None:
        results["judge"] = {**judged["settings"], "bias": judged["bias"]}
        # One rule for the report and the verdict: a judge past a bias threshold is no evidence.
        results["judge"].update(judge_trust(results["judge"], results["candidates"], config.checks))
        if not results["judge"]["trusted"]:
            set_judge_aside(results)
    pitfalls = find_pitfalls(run, config, task, results, predictions, transfer)
    results["checks"], results["warnings"] = pitfalls["checks"], pitfalls["warnings"]
    transfer_rows = {
        name: {cand: rows for cand, (rows, _) in part.items()} for name, part in on_transfer.items()
    }
    errors = failed_calls(predictions, judged, transfer_rows)
    calls = sum(
        len(rows) for part in (predictions, *transfer_rows.values()) for rows in part.values()
    )
    if judged is not None:
        calls += judged["settings"]["calls"]
    results["failed_calls"], results["calls"] = len(errors), calls
    write_records(run.eval_dir / "errors.jsonl", errors)
    write_record(run.eval_dir / "scores.json", Scores.model_validate(results))
    if errors and len(errors) > config.evaluate.max_failed_fraction * max(1, calls):
        raise StageIncomplete(
            f"evaluate: {len(errors)} of {calls} call(s) failed (see "
            f"{run.eval_dir / 'errors.jsonl'}); run `potstill evaluate {run.root}` again to "
            "retry them",
            results,
        )
    return results


def _prediction_errors(
    predictions: dict[str, list[dict[str, Any]]], where: dict[str, str]
) -> list[ErrorRow]:
    return [
        error_row(row["id"], "predict", row, candidate=name, **where)
        for name, rows in predictions.items()
        for row in rows
        if row.get("error") is not None
    ]


def failed_calls(
    predictions: dict[str, list[dict[str, Any]]],
    judged: dict[str, Any] | None,
    transfer: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> list[ErrorRow]:
    """The eval/errors.jsonl lines: every call that failed (a candidate's reply, on the test
    split or on a transfer set named by `transfer_set`, or a judge call), with its status and
    reason. Failed calls are not stored, so a re-run retries them."""
    errors = _prediction_errors(predictions, {})
    for name, rows in (transfer or {}).items():
        errors += _prediction_errors(rows, {"transfer_set": name})
    for name, records in (judged or {}).get("records", {}).items():
        for record in records:
            asked = [("judge_pointwise", record.get("pointwise"))]
            pair = record.get("pairwise") or {}
            asked += [
                (f"judge_pairwise_{k}", pair.get(k))
                for k in ("candidate_first", "candidate_second")
            ]
            for phase, entry in asked:
                if entry and entry.get("error") is not None:
                    errors.append(error_row(record["id"], phase, entry, candidate=name))
    return errors
