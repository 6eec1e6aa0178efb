"""Side-by-side examples: test inputs where the candidates disagree, each reply shown."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

MAX_INPUT = 400
MAX_REPLY = 300


def _clip(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verdict(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a candidate got on an example: its score, or its answer when there is no reference."""
    return (row["score"],) if row.get("score") is not None else (row.get("answer"),)


def disagreements(
    order: list[str],
    predictions: dict[str, list[dict[str, Any]]],
    inputs: dict[str, str],
    judged: dict[str, dict[str, dict[str, Any]]],
    count: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Up to `count` examples on which the candidates do not all agree, drawn evenly from the
    different patterns of agreement (e.g. student right and teacher wrong, and the reverse)."""
    by_id = {name: {r["id"]: r for r in rows} for name, rows in predictions.items()}
    first = predictions[order[0]]
    patterns: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for row in first:
        ident = row["id"]
        outcome = tuple(_verdict(by_id[name][ident]) for name in order if ident in by_id[name])
        if len(set(outcome)) > 1:
            patterns[outcome].append(ident)
    rng = random.Random(seed)
    # Within a pattern, examples the judge saw come first (popped from the end), so the
    # judge's scores show beside the replies.
    seen = {ident for records in judged.values() for ident in records}
    pools = [
        sorted(rng.sample(ids, len(ids)), key=lambda i: i in seen)
        for _, ids in sorted(patterns.items(), key=lambda kv: -len(kv[1]))
    ]
    chosen: list[str] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop())
    return [_example(ident, order, by_id, inputs, judged) for ident in chosen]


def _example(
    ident: str,
    order: list[str],
    by_id: dict[str, dict[str, dict[str, Any]]],
    inputs: dict[str, str],
    judged: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    replies = []
    for name in order:
        row = by_id[name].get(ident)
        if row is None:
            continue
        point = judged.get(name, {}).get(ident, {}).get("pointwise") or {}
        replies.append(
            {
                "candidate": name,
                "reply": _clip(
                    row["reply"] if row["reply"] is not None else row["error"], MAX_REPLY
                ),
                "answer": row.get("answer"),
                "status": row["status"],
                "correct": None if row.get("score") is None else row["score"] >= 0.5,
                "judge_score": point.get("score"),
            }
        )
    reference = next((by_id[n][ident].get("reference") for n in order if ident in by_id[n]), None)
    return {
        "id": ident,
        "input": _clip(inputs.get(ident, ""), MAX_INPUT),
        "reference": reference,
        "replies": replies,
    }
