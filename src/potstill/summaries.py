"""What each stage says when it ends: a sentence or a small table, never a dict's repr.

One home for these messages, so the CLI, the stages and the pipeline read alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from potstill.figures import percent
from potstill.progress import duration
from potstill.progress import say as say  # the stages print their sentences with it


def counted(reasons: Mapping[str, int], empty: str = "none") -> str:
    """`{"wrong_answer": 3, "too_long": 1}` -> `3 wrong answer, 1 too long` (most first)."""
    items = sorted(((n, k) for k, n in reasons.items() if n), key=lambda item: (-item[0], item[1]))
    return ", ".join(f"{n} {k.replace('_', ' ')}" for n, k in items) or empty


def plural(n: int, noun: str) -> str:
    """`1 step`, `7 steps`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _with_reasons(total: int, noun: str, reasons: Mapping[str, int]) -> str:
    """`3 rejected (2 wrong answer, 1 no answer)`, or `none rejected`."""
    return f"{total} {noun} ({counted(reasons)})" if total else f"none {noun}"


def synth_sentence(summary: Mapping[str, Any], labelled: int) -> str:
    """`synth: 26 of 30 rows accepted; 4 rejected (3 wrong answer, 1 no answer); ...`."""
    rejected: Mapping[str, int] = summary.get("rejected", {})
    generation: Mapping[str, int] = summary.get("generation_rejected", {})
    parts = [
        f"{summary.get('accepted', 0)} of {labelled} rows accepted",
        _with_reasons(sum(rejected.values()), "rejected", rejected),
    ]
    if generation:
        parts.append(
            _with_reasons(sum(generation.values()), "generated inputs dropped", generation)
        )
    parts.append(f"{summary.get('failed_calls', 0)} of {summary.get('calls', 0)} calls failed")
    parts.append(f"cost ${summary.get('cost_usd', 0.0):.4f}")
    return "synth: " + "; ".join(parts) + "."


def train_start_sentence(name: str, rows: int, source: str, target: str, skipped: Any) -> str:
    """`train[a]: 26 rows from synth (target answer); 2 left out (2 no reference).`"""
    left_out = _with_reasons(sum(skipped.values()), "left out", skipped)
    return f"train[{name}]: {plural(rows, 'row')} from {source} (target {target}); {left_out}."


def train_end_sentence(name: str, summary: Mapping[str, Any]) -> str:
    """`train[a]: 7 steps in 1m02s; loss 1.234 at the end (dev 1.301); 3 rows too long.`"""
    parts = [plural(summary.get("steps", 0), "step")]
    if summary.get("seconds"):
        parts[0] += f" in {duration(summary['seconds'])}"
    if summary.get("last_loss") is not None:
        loss = f"loss {summary['last_loss']:.3f} at the end"
        if summary.get("eval_loss") is not None:
            loss += f" (dev {summary['eval_loss']:.3f})"
        parts.append(loss)
    if summary.get("too_long"):
        parts.append(f"{summary['too_long']} rows longer than max_length left out")
    return f"train[{name}]: " + "; ".join(parts) + "."


def warning_lines(stage: str, warnings: list[dict[str, str]]) -> list[str]:
    """`synth: warning: the teacher's yield is 4.2%: ...`, one line per guard-rail warning."""
    return [f"{stage}: warning: {w['message']}" for w in warnings]


def judge_line(scores: Mapping[str, Any]) -> str | None:
    """`evaluate: the judge is not evidence: ...` when it failed its own checks, else None."""
    judge = scores.get("judge") or {}
    if judge.get("trusted", True):
        return None
    return (
        "evaluate: warning: the judge failed its own checks and its scores are left out of "
        "the comparisons: " + "; ".join(judge.get("reasons", [])) + "."
    )


def _figure(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return "-"
    return percent(value) if entry.get("percent") else f"{value:.3f}"


def evaluate_table(scores: Mapping[str, Any], on: str | None = None) -> Table:
    """The headline metric of every candidate, with its 95% interval and n (`on`: the name of
    the transfer set these scores are of; the test split's when unset)."""
    headline = scores["headline"]
    where = f" on transfer set {on}" if on is not None else ""
    table = Table(title=f"evaluate: {headline}{where}", title_justify="left")
    for column in ("candidate", "role", headline, "95% interval", "n"):
        table.add_column(column, justify="left" if column in ("candidate", "role") else "right")
    for name in scores.get("order", scores["candidates"]):
        candidate = scores["candidates"][name]
        entry = candidate["metrics"].get(headline, {})
        interval = f"{_figure(entry, 'ci_low')} to {_figure(entry, 'ci_high')}"
        table.add_row(
            name, candidate.get("role", ""), _figure(entry, "value"), interval, str(entry.get("n"))
        )
    return table
