"""synth/card.md: where every input went, what the teacher got right, and what it cost."""

from __future__ import annotations

from collections import defaultdict

from potstill.config import RunConfig
from potstill.figures import percent
from potstill.records import GeneratedInput, SynthSummary, TeacherRow

EXAMPLES_PER_REASON = 2


def _cost_lines(summary: SynthSummary) -> list[str]:
    cost = summary.cost
    tokens = f"{cost['prompt_tokens']} prompt + {cost['completion_tokens']} completion tokens"
    if not cost["priced"]:
        return [f"- teacher calls: {cost['calls']}, {tokens} (no price configured)"]
    sent = cost["sent_this_run"]
    lines = [
        f"- teacher cost: ${cost['usd']:.4f} for {cost['calls']} calls, {tokens}; "
        f"sent in the last run: {sent['calls']} calls, ${sent['usd']:.4f}"
    ]
    if cost.get("mode") == "batch":
        lines[0] += " (through the teacher's Batch API, at batch prices)"
    if cost["max_usd"] is not None:
        lines.append(f"- budget: ${cost['max_usd']:g}")
    return lines


def _reference_lines(summary: SynthSummary) -> list[str]:
    missing, total = summary.inputs_without_reference, summary.inputs
    if not missing:
        return []
    return [
        f"- training inputs without a reference: {missing} of {total} (the reference check "
        "cannot reject their replies, and teacher accuracy covers only the others)"
    ]


def _logprob_lines(summary: SynthSummary) -> list[str]:
    found = summary.logprobs
    if not found:
        return []
    counts = found["rows"]
    return [
        f"- teacher top-{found['k']} logprobs (synth/logprobs.npz, docs/training.md): "
        f"{counts.get('aligned', 0)} rows at the aligned span of the teacher's reply, "
        f"{counts.get('rescored', 0)} re-scored under the teacher's prompt, "
        f"{counts.get('unaligned', 0)} unalignable (they train with cross-entropy alone)"
    ]


def _yield_table(summary: SynthSummary, total: int) -> list[str]:
    lines = ["| outcome | rows | share |", "|---|---|---|"]
    lines.append(f"| accepted | {summary.accepted} | {percent(summary.accepted / total)} |")
    for reason, count in sorted(summary.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| rejected: {reason} | {count} | {percent(count / total)} |")
    return lines


def _examples(rejected: list[TeacherRow]) -> list[str]:
    by_reason: dict[str, list[TeacherRow]] = defaultdict(list)
    for row in rejected:
        reason = str(row.rejected)
        if len(by_reason[reason]) < EXAMPLES_PER_REASON:
            by_reason[reason].append(row)
    lines = []
    for reason in sorted(by_reason):
        for row in by_reason[reason]:
            what = row.reply or row.error or row.rejected_detail or ""
            if reason in ("contamination", "duplicate", "near_duplicate"):
                what = f"{row.rejected_detail}: {next(iter(row.inputs.values()))}"
            lines.append(f"- `{row.id}` ({reason}): {what.replace(chr(10), ' ')[:200]}")
    return lines


def render_card(
    config: RunConfig,
    summary: SynthSummary,
    rejected: list[TeacherRow],
    generated: list[GeneratedInput],
) -> str:
    total = summary.accepted + sum(summary.rejected.values())
    samples = summary.samples
    lines = [
        "# Synthetic data card",
        "",
        f"- teacher: `{config.teacher.model.model}` ({config.teacher.model.backend}), "
        f"prompt style `{config.teacher.prompt.style}`, {len(config.teacher.prompt.shots)} shots",
        f"- procedure: {config.teacher.procedure or 'as configured'}",
        f"- samples per input: {samples}"
        + (
            f" at temperature {config.teacher.prompt.temperature:g}; the answer is the "
            "majority vote"
            if samples > 1
            else ""
        ),
        f"- training target: `{config.synth.target}`",
        f"- inputs: {summary.inputs} from the training split, "
        f"{summary.generated_inputs} written by the teacher; accepted: {summary.accepted}",
        f"- teacher accuracy against the references on the training split: "
        f"{percent(summary.teacher_accuracy_on_train)}"
        + (
            f" (first sample alone: {percent(summary.teacher_accuracy_on_train_first_sample)})"
            if samples > 1
            else ""
        ),
        *_reference_lines(summary),
        f"- failed calls: {summary.failed_calls} of {summary.calls}",
        *_cost_lines(summary),
        *_logprob_lines(summary),
        "",
        "## Yield",
        "",
        *(_yield_table(summary, total) if total else ["No inputs."]),
        "",
    ]
    if summary.warnings:  # the guard rails (potstill/guards.py, docs/checks.md)
        lines += ["## Warnings", "", *[f"- {w['message']}" for w in summary.warnings], ""]
    if generated:
        lines += [
            "## Synthetic inputs",
            "",
            f"{len(generated)} requests for new inputs; {summary.generated_inputs} parsed "
            "into inputs (then screened and labelled like the others above).",
            "",
            "| not an input because | requests |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in sorted(summary.generation_rejected.items())],
            "",
        ]
    lines += ["## Examples of rejected rows", "", *(_examples(rejected) or ["- none"])]
    return "\n".join(lines) + "\n"
