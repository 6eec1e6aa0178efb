"""Guard rails on a meaningless run: the teacher's yield and answer spread, and whether a
student had enough rows, steps and a falling loss to learn anything.

Each stage measures its figures where it has them (synth: `teacher_figures`, train:
`student_figures`) and keeps them in its summary.json; the rules (`teacher_warnings`,
`student_warnings`) turn figures and the thresholds of `checks:` (docs/checks.md) into
warnings with the numbers and the likely fix. The synth and train stages print them when they
end; the evaluate stage applies the same rules again with the run's current thresholds, so
scores.json and the report carry them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from potstill.config import ChecksConfig, RunConfig
from potstill.figures import percent
from potstill.records import TeacherRow, TrainLogEntry, TrainSummary, read_record, read_records
from potstill.runs import RunFolder

Finding = dict[str, str]


def warn(check: str, subject: str, message: str) -> Finding:
    """One warning: which check, about what (a candidate, a student, `teacher`), and its text."""
    return {"check": check, "subject": subject, "message": message}


# Why a teacher reply or input made no row, and the likely fix, by rejection reason
# (synth/filters.py). `no_answer` with an answer that is not one of the task's is told apart
# (see `_outside`): "outside the label set" calls for synonyms, not a stronger teacher.
REASON_FIXES: dict[str, tuple[str, str]] = {
    "call_failed": (
        "teacher calls failed",
        "see synth/errors.jsonl; `potstill synth RUN` retries them",
    ),
    "finish_length": (
        "replies were cut off at max_tokens",
        "raise teacher.prompt.max_tokens",
    ),
    "malformed": (
        "replies were not in the asked format (e.g. broken JSON)",
        "show the format with worked examples (teacher.prompt.shots) or use a stronger teacher",
    ),
    "no_answer": (
        "replies held no answer",
        "show the answer format with worked examples (teacher.prompt.shots) or use a "
        "stronger teacher",
    ),
    "no_rationale": (
        "replies gave no rationale for target rationale_answer",
        "ask the teacher with style cot, or set synth.target: answer",
    ),
    "disagrees_with_reference": (
        "replies disagreed with the reference",
        "the teacher is wrong on those inputs: use a stronger teacher or a better prompt "
        "(synth.require_reference_match: false would keep its mistakes as training rows)",
    ),
    "too_short": (
        "completions were shorter than synth.min_completion_chars",
        "lower synth.min_completion_chars",
    ),
    "too_long": (
        "completions were longer than synth.max_completion_chars",
        "raise synth.max_completion_chars",
    ),
    "contamination": (
        "inputs were near-copies of evaluation examples and never sent",
        "the training data repeats the test data; synth/rejected.jsonl names each copy",
    ),
    "duplicate": ("inputs repeated an earlier input", "deduplicate the dataset"),
    "near_duplicate": (
        "generated inputs nearly repeated an earlier one",
        "add synth.generate.variations or raise synth.generate.temperature",
    ),
}

# `no_answer` replies that did give an answer, just not one of the task's, by task kind.
OUTSIDE = {
    "classification": (
        "replies were outside the label set",
        "add what the teacher says as synonyms (task.synonyms) or name the labels in "
        "task.description",
    ),
    "multiple_choice": (
        "replies named no option",
        "ask for the letter alone with worked examples (teacher.prompt.shots)",
    ),
}


def teacher_figures(records: Sequence[TeacherRow], kind: str, discrete: bool) -> dict[str, Any]:
    """The numbers behind the teacher checks, from synth/teacher.jsonl's records: how many
    inputs became rows and why the others did not (`outside`: `no_answer` replies whose answer
    is not one of the task's, with the most frequent ones), and, for tasks with discrete
    answers, the most common answer in the kept rows, among all answered inputs and among the
    references."""
    rejected = Counter(str(r.rejected) for r in records if r.rejected)
    outside = Counter(
        str(r.raw_answer) for r in records if r.rejected == "no_answer" and r.raw_answer is not None
    )
    figures: dict[str, Any] = {
        "labelled": len(records),
        "accepted": len(records) - sum(rejected.values()),
        "rejected": dict(rejected),
        "outside": sum(outside.values()) if kind in OUTSIDE else 0,
        "outside_examples": [[a, n] for a, n in outside.most_common(3)] if kind in OUTSIDE else [],
    }
    if discrete:
        kept = Counter(str(r.answer) for r in records if not r.rejected)
        if kept:
            answer, count = kept.most_common(1)[0]
            answered = [r for r in records if r.status == "ok"]
            references = [r for r in records if r.reference is not None]
            figures["answers"] = {
                "inputs": len(records),
                "answer": answer,
                "kept": count,
                "kept_of": sum(kept.values()),
                "answered": sum(str(r.answer) == answer for r in answered),
                "answered_of": len(answered),
                "references": sum(str(r.reference) == answer for r in references),
                "references_of": len(references),
            }
    return figures


def _rejection_parts(figures: Mapping[str, Any], kind: str) -> list[str]:
    """The reasons that make up most rejections (at most three), each with its fix."""
    counts = Counter(figures["rejected"])
    outside = figures.get("outside", 0)
    if outside:
        counts["no_answer"] -= outside
        counts["outside"] = outside
    total, labelled, covered = sum(counts.values()), figures["labelled"], 0
    parts: list[str] = []
    for reason, n in counts.most_common():
        if n <= 0 or len(parts) == 3 or covered >= 0.8 * total:
            break
        covered += n
        if reason == "outside":
            what, fix = OUTSIDE[kind]
            seen = ", ".join(f"{a!r} {c}" for a, c in figures.get("outside_examples", []))
            what += f" (most often {seen})" if seen else ""
        elif reason.startswith("finish_") and reason not in REASON_FIXES:
            what = f"replies ended with finish reason {reason[len('finish_') :]!r}"
            fix = "see synth/rejected.jsonl"
        else:
            what, fix = REASON_FIXES.get(reason, (reason.replace("_", " "), "see synth/card.md"))
        parts.append(f"{n} of {labelled} {what}: {fix}")
    return parts


def teacher_warnings(figures: Mapping[str, Any], kind: str, checks: ChecksConfig) -> list[Finding]:
    """A warning when few inputs became training rows (naming the reasons that dominate), and
    one when a single answer fills the kept rows (the student would learn a constant)."""
    found = []
    labelled, accepted = figures["labelled"], figures["accepted"]
    if labelled and accepted / labelled < checks.min_teacher_yield:
        parts = _rejection_parts(figures, kind)
        found.append(
            warn(
                "teacher_yield",
                "teacher",
                f"the teacher's yield is {percent(accepted / labelled)}: {accepted} of {labelled} "
                f"inputs became training rows (below {percent(checks.min_teacher_yield)}, "
                "checks.min_teacher_yield). " + "; ".join(parts) + ".",
            )
        )
    spread = figures.get("answers")
    # Five rows at least: on fewer, one answer filling them says little (and the row count
    # warns about the student anyway).
    share = spread["kept"] / spread["kept_of"] if spread else 0.0
    if spread and spread["kept_of"] >= 5 and share >= checks.max_answer_share:
        found.append(warn("teacher_constant_answer", "teacher", _constant_message(spread, checks)))
    return found


def _constant_message(spread: Mapping[str, Any], checks: ChecksConfig) -> str:
    answer, kept, kept_of = spread["answer"], spread["kept"], spread["kept_of"]
    answered, answered_of = spread["answered"], spread["answered_of"]
    text = (
        f"one answer fills the training rows: {answer!r} in {kept} of {kept_of} kept rows "
        f"({percent(kept / kept_of)}; at most {percent(checks.max_answer_share)}, "
        f"checks.max_answer_share), so a student trained on them learns to say {answer!r} "
        f"whatever the input. The teacher gave it to {answered} of the {answered_of} inputs "
        "it answered"
    )
    if answered_of and answered / answered_of < checks.max_answer_share:
        return text + "; the rejections removed most other answers (see synth/rejected.jsonl)."
    unanswered = spread["inputs"] - answered_of
    if unanswered > (1 - checks.max_answer_share) * spread["inputs"]:
        return text + (
            f"; the other {unanswered} inputs got no answer in the asked form, and what they "
            "would have said is missing from the rows (see the teacher's yield)."
        )
    refs, refs_of = spread["references"], spread["references_of"]
    if not refs_of:
        return text + ". Check the teacher on labelled examples, or use a stronger teacher."
    share = refs / refs_of
    text += f"; the references give it to {refs} of {refs_of} ({percent(share)}): "
    if share >= checks.max_answer_share:
        return text + "the data itself is this imbalanced; balance the training inputs."
    return text + "the bias is the teacher's; use a stronger teacher or a better prompt."


def loss_ends(log: Sequence[TrainLogEntry]) -> tuple[float, float] | None:
    """The mean training loss of the first and of the last quarter of the logged steps (at
    least one step each), or None without two logged losses."""
    losses = [float(e.loss) for e in log if e.loss is not None]
    if len(losses) < 2:
        return None
    k = max(1, len(losses) // 4)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def student_figures(
    rows: int, steps: int, warmup_steps: int, log: Sequence[TrainLogEntry]
) -> dict[str, Any]:
    """The numbers behind the student checks, from its summary.json (rows, optimizer steps,
    warm-up steps) and train_log.jsonl."""
    ends = loss_ends(log)
    return {
        "rows": rows,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "loss_start": ends[0] if ends else None,
        "loss_end": ends[1] if ends else None,
    }


def student_warnings(name: str, figures: Mapping[str, Any], checks: ChecksConfig) -> list[Finding]:
    """Warnings for a student that could not have learnt much: too few rows or optimizer
    steps, a training loss that did not fall, a warm-up that took most of the steps."""
    found = []
    rows, steps = figures.get("rows"), figures.get("steps")
    if rows is not None and rows < checks.min_student_rows:
        found.append(
            warn(
                "student_rows",
                name,
                f"{name} was trained on {rows} rows (fewer than {checks.min_student_rows}, "
                "checks.min_student_rows): too few to teach it the task; a difference from "
                "the base student is more likely noise than learning. Label more training inputs "
                "(a larger dataset, or synth.generate) or raise the teacher's yield.",
            )
        )
    warmup = figures.get("warmup_steps")
    long_warmup = ""
    if warmup and steps and warmup / steps > checks.max_warmup_share:
        long_warmup = (
            f"warm-up took {warmup} of its {steps} optimizer steps ({percent(warmup / steps)}; at "
            f"most {percent(checks.max_warmup_share)}, checks.max_warmup_share), the first at "
            "learning rate 0"
        )
    if steps is not None and steps < checks.min_optimizer_steps:
        found.append(
            warn(
                "student_steps",
                name,
                f"{name} was trained for {steps} optimizer steps (fewer than "
                f"{checks.min_optimizer_steps}, checks.min_optimizer_steps): too few updates to "
                "move its weights far from the base student"
                + (f"; {long_warmup}" if long_warmup else "")
                + ". More rows, more epochs (train.epochs) or a smaller batch "
                "(train.batch_size, train.gradient_accumulation_steps).",
            )
        )
        long_warmup = ""  # said with the steps
    start, end = figures.get("loss_start"), figures.get("loss_end")
    if start is not None and end is not None and start > 0:
        drop = (start - end) / start
        if drop < checks.min_loss_drop:
            found.append(
                warn(
                    "student_loss",
                    name,
                    f"{name}'s training loss "
                    + ("hardly fell" if drop > 0 else "did not fall")
                    + f": {start:.3f} over the first quarter of its steps, {end:.3f} over the "
                    f"last ({'down' if drop > 0 else 'up'} {percent(abs(drop))}; at least "
                    f"{percent(checks.min_loss_drop)} expected, checks.min_loss_drop). It learnt "
                    "little from its rows: raise train.learning_rate or train.epochs, or check "
                    "that the rows teach something the base student does not already say.",
                )
            )
    if long_warmup:
        found.append(
            warn(
                "student_warmup",
                name,
                f"{name}: {long_warmup}, so it hardly trained at the configured rate. Train "
                "for more steps.",
            )
        )
    return found


def run_guards(run: RunFolder, config: RunConfig, kind: str, discrete: bool) -> dict[str, Any]:
    """The teacher and student checks of a run, from its synth and student files, under the
    config's current thresholds: `checks` (`teacher`, `students.<name>`) and `warnings`, for
    scores.json. A stage that has not written its files is left out."""
    checks: dict[str, Any] = {}
    warnings: list[Finding] = []
    records = run.synth_dir / "teacher.jsonl"
    if records.exists():
        checks["teacher"] = teacher_figures(read_records(records, TeacherRow), kind, discrete)
        warnings += teacher_warnings(checks["teacher"], kind, config.checks)
    for student in config.students:
        folder = run.student_dir(student.name)
        if not (folder / "summary.json").exists():
            continue
        summary = read_record(folder / "summary.json", TrainSummary)
        log_path = folder / "train_log.jsonl"
        log = read_records(log_path, TrainLogEntry) if log_path.exists() else []
        figures = student_figures(summary.rows, summary.steps, summary.warmup_steps, log)
        checks.setdefault("students", {})[student.name] = figures
        warnings += student_warnings(student.name, figures, config.checks)
    return {"checks": checks, "warnings": warnings}
