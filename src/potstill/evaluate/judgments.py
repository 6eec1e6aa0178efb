"""Run the LLM judge over the candidates' predictions, and check the judge itself.

Pointwise: every candidate's answer gets a rubric score (1-5) with a short reason.
Pairwise: every other candidate against the reference candidate (the teacher), asked with the
candidate first and again with it second; a verdict that changes with the order is a tie.
Bias checks: the position-flip rate, how often the first position wins, the correlation of
scores and verdicts with answer length, and whether the judge is the teacher's own model.
The judge sees a seeded sample of the test split, the same examples for every candidate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from potstill.config import ModelConfig, RunConfig
from potstill.evaluate.answers import answer_cached
from potstill.evaluate.judge import (
    Judgement,
    PairOutcome,
    combine_orders,
    pairwise_messages,
    parse_score,
    parse_verdict,
    pointwise_messages,
)
from potstill.evaluate.rubrics import rubric_for
from potstill.evaluate.stats import spearman
from potstill.models.base import ChatModel, ChatRequest
from potstill.records import call_failure
from potstill.runs import RunFolder
from potstill.tasks import Example, Task
from potstill.tasks.base import task_user_text

REFERENCE = "teacher"  # pairwise verdicts are against this candidate
# The metrics the judge adds to a candidate's rows and `metrics` (evaluate/pitfalls.py sets an
# untrusted judge's aside).
JUDGE_METRICS = ("judge_score", "judge_win_rate")
WIN_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
SIGN = {"win": 1.0, "tie": 0.0, "loss": -1.0}


def judge_sample(n_test: int, size: int | None, seed: int) -> list[int]:
    """Indices of the examples the judge sees: all of them, or a seeded sample."""
    if size is None or size >= n_test:
        return list(range(n_test))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_test, size=size, replace=False))


def same_model(a: ModelConfig, b: ModelConfig) -> bool:
    """The same model behind both configs (backend, name and endpoint)."""
    return (a.backend, a.model, a.base_url) == (b.backend, b.model, b.base_url)


def _words(text: str | None) -> int:
    return len((text or "").split())


@dataclass
class _Plan:
    """The judge calls to make, and which candidate and example each belongs to."""

    pointwise: list[tuple[str, int, ChatRequest]]
    pairwise: list[tuple[str, int, ChatRequest, ChatRequest]]


def _plan(
    config: RunConfig,
    task: Task,
    test: list[Example],
    sample: list[int],
    predictions: dict[str, list[dict[str, Any]]],
) -> _Plan:
    judge = config.judge
    _, rubric = rubric_for(task.kind, judge.rubric)
    plan = _Plan([], [])
    for i in sample:
        example = test[i]
        text = task_user_text(task, example.inputs, "zero_shot")
        reference = example.reference if judge.use_reference else None

        def ask(messages: list[dict[str, str]]) -> ChatRequest:
            return ChatRequest(messages, judge.max_tokens, 0.0)

        for name, rows in predictions.items():
            reply = rows[i]["reply"]
            if reply is None:  # a failed call has nothing to judge
                continue
            if judge.pointwise:
                plan.pointwise.append(
                    (
                        name,
                        i,
                        ask(
                            pointwise_messages(
                                rubric, task.kind, text, reference, reply, judge.worked_examples
                            )
                        ),
                    )
                )
            other = predictions.get(REFERENCE, [])
            if not judge.pairwise or name == REFERENCE or not other or other[i]["reply"] is None:
                continue
            ref_reply = other[i]["reply"]
            first = pairwise_messages(
                rubric, task.kind, text, reference, reply, ref_reply, judge.worked_examples
            )
            second = pairwise_messages(
                rubric, task.kind, text, reference, ref_reply, reply, judge.worked_examples
            )
            plan.pairwise.append((name, i, ask(first), ask(second)))
    return plan


def run_judge(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    test: list[Example],
    predictions: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Judge every candidate; adds `judge_score` / `judge_win_rate` to the rows' `scores`.

    Returns {"candidates": {name: summary}, "records": {name: [per-example record]},
    "bias": {...}, "settings": {...}}.
    """
    judge = config.judge
    sample = judge_sample(len(test), judge.sample_size, judge.seed)
    plan = _plan(config, task, test, sample, predictions)
    # Pointwise and pairwise requests go separately: each kind shares a long prompt prefix
    # (rubric and worked examples) that a local judge computes once.
    loaded: dict[str, ChatModel] = {}
    point_requests = [r for _, _, r in plan.pointwise]
    point_answers = answer_cached(
        run, judge.model, point_requests, "judge: pointwise scores", loaded=loaded
    )
    pair_requests = [r for _, _, first, second in plan.pairwise for r in (first, second)]
    pair_answers = answer_cached(
        run, judge.model, pair_requests, "judge: pairwise verdicts", loaded=loaded
    )
    loaded.clear()

    records: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in predictions}
    points: list[tuple[str, int, Judgement]] = []
    for (name, i, _), answer in zip(plan.pointwise, point_answers):
        verdict = parse_score(answer.text if answer.ok else None)
        points.append((name, i, verdict))
        rec = records[name].setdefault(i, {"id": test[i].id})
        rec["pointwise"] = {
            "reply": answer.text,
            "status": verdict.status,
            "score": int(verdict.value) if verdict.ok and verdict.value else None,
            "reason": verdict.reason,
            **call_failure(answer),
        }
        if verdict.ok and verdict.value:
            predictions[name][i].setdefault("scores", {})["judge_score"] = float(verdict.value)
    pairs: list[tuple[str, int, PairOutcome]] = []
    for k, (name, i, _, _) in enumerate(plan.pairwise):
        first_answer, second_answer = pair_answers[2 * k], pair_answers[2 * k + 1]
        first = parse_verdict(first_answer.text if first_answer.ok else None)
        second = parse_verdict(second_answer.text if second_answer.ok else None)
        outcome = combine_orders(first, second)
        pairs.append((name, i, outcome))
        rec = records[name].setdefault(i, {"id": test[i].id})
        rec["pairwise"] = {
            "vs": REFERENCE,
            "candidate_first": {
                "reply": first_answer.text,
                "verdict": first.value,
                **call_failure(first_answer),
            },
            "candidate_second": {
                "reply": second_answer.text,
                "verdict": second.value,
                **call_failure(second_answer),
            },
            "outcome": outcome.outcome,
            "flipped": outcome.flipped,
        }
        if outcome.outcome is not None:
            scores = predictions[name][i].setdefault("scores", {})
            scores["judge_win_rate"] = WIN_VALUE[outcome.outcome]
    summaries = {name: _candidate_summary(name, points, pairs, len(sample)) for name in predictions}
    answers = list({id(a): a for a in [*point_answers, *pair_answers]}.values())
    return {
        "candidates": summaries,
        "records": {name: [recs[i] for i in sorted(recs)] for name, recs in records.items()},
        "bias": _bias(points, pairs, predictions),
        "settings": {
            "model": judge.model.model,
            "backend": judge.model.backend,
            "rubric": rubric_for(task.kind, judge.rubric)[0],
            "sample_size": len(sample),
            "test_size": len(test),
            "seed": judge.seed,
            "worked_examples": judge.worked_examples,
            # What the judge was really shown: none when no sampled example has a reference.
            "use_reference": judge.use_reference
            and any(test[i].reference is not None for i in sample),
            "shown_reference": sum(test[i].reference is not None for i in sample)
            if judge.use_reference
            else 0,
            "same_as_teacher": same_model(judge.model, config.teacher.model),
            "calls": len(answers),
            "compute_s": float(sum(a.latency_s for a in answers)),
            "pairwise_vs": REFERENCE,
        },
    }


def _candidate_summary(
    name: str,
    points: list[tuple[str, int, Judgement]],
    pairs: list[tuple[str, int, PairOutcome]],
    sample: int,
) -> dict[str, Any]:
    mine = [j for n, _, j in points if n == name]
    scored = [int(j.value) for j in mine if j.ok and j.value]
    outcomes = [p for n, _, p in pairs if n == name]
    decided = [p for p in outcomes if p.outcome is not None]
    counts = Counter(p.outcome for p in decided)
    summary: dict[str, Any] = {
        "sample": sample,
        "pointwise": {
            "judged": len(mine),
            "scored": len(scored),
            "malformed_rate": (len(mine) - len(scored)) / len(mine) if mine else None,
            "distribution": {str(s): scored.count(s) for s in range(1, 6)},
        },
    }
    if outcomes:
        summary["pairwise"] = {
            "vs": REFERENCE,
            "pairs": len(outcomes),
            "decided": len(decided),
            "malformed_rate": (len(outcomes) - len(decided)) / len(outcomes),
            "win": counts["win"],
            "tie": counts["tie"],
            "loss": counts["loss"],
            "flipped": sum(p.flipped for p in decided),
            "flip_rate": sum(p.flipped for p in decided) / len(decided) if decided else None,
        }
    return summary


def _bias(
    points: list[tuple[str, int, Judgement]],
    pairs: list[tuple[str, int, PairOutcome]],
    predictions: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Position and length biases over all of the judge's readable replies."""
    decided = [(n, i, p) for n, i, p in pairs if p.outcome is not None]
    single = [v for _, _, p in decided for v in (p.candidate_first, p.candidate_second)]
    letters = [v for v in single if v in ("A", "B")]
    scored = [(n, i, int(j.value)) for n, i, j in points if j.ok and j.value]
    lengths = [_words(predictions[n][i]["reply"]) for n, i, _ in scored]
    gaps, signs, longer_wins = [], [], []
    for name, i, p in decided:
        gap = _words(predictions[name][i]["reply"]) - _words(predictions[REFERENCE][i]["reply"])
        gaps.append(float(gap))
        signs.append(SIGN[str(p.outcome)])
        if gap != 0 and p.outcome in ("win", "loss"):
            longer_wins.append((gap > 0) == (p.outcome == "win"))
    return {
        "pairs": len(decided),
        "flip_rate": sum(p.flipped for _, _, p in decided) / len(decided) if decided else None,
        # Of the single-order verdicts that named a winner, the share that named position A.
        "first_position_rate": letters.count("A") / len(letters) if letters else None,
        "first_position_n": len(letters),
        "same_position_both_orders": sum(
            p.candidate_first == p.candidate_second and p.candidate_first in ("A", "B")
            for _, _, p in decided
        ),
        "score_length_spearman": spearman([s for *_, s in scored], lengths),
        "score_length_n": len(scored),
        "verdict_length_spearman": spearman(signs, gaps),
        "verdict_length_n": len(decided),
        "longer_wins_rate": sum(longer_wins) / len(longer_wins) if longer_wins else None,
        "longer_wins_n": len(longer_wins),
    }
