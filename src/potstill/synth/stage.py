"""The synth stage: the teacher labels the training inputs (and new ones it writes from seed
examples); filtered rows become train.jsonl, with a data card that accounts for every row."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from potstill.config import RunConfig
from potstill.errors import StageIncomplete
from potstill.files import atomic_write_text
from potstill.guards import teacher_figures, teacher_warnings
from potstill.models.base import ChatResponse
from potstill.models.callstore import CallStore
from potstill.models.cost import call_cost
from potstill.records import (
    ErrorRow,
    GeneratedInput,
    SynthSummary,
    TeacherRow,
    TrainingRow,
    call_failure,
    error_row,
    write_record,
    write_records,
)
from potstill.runs import RunFolder, StageFailed
from potstill.summaries import say, synth_sentence, warning_lines
from potstill.synth.calls import TeacherCalls
from potstill.synth.card import render_card
from potstill.synth.filters import length_reason, rejection_reason
from potstill.synth.generate import generation_calls
from potstill.synth.logprobs import FILE as DISTRIBUTIONS_FILE
from potstill.synth.logprobs import Kept, require_logprobs, teacher_distributions
from potstill.synth.logprobs import write as write_distributions
from potstill.synth.phases import label_plan, sample_requests, written_input
from potstill.synth.vote import majority_vote
from potstill.tasks import Example, Parsed, Task

__all__ = ["accepted_row", "rejection_reason", "run_synth", "sample_requests", "training_row"]


def training_row(task: Task, config: RunConfig, example: Example, parsed: Parsed) -> dict[str, Any]:
    """A conversational prompt/completion row, in the form TRL's SFTTrainer takes."""
    prompt = config.synth.prompt
    # The student learns the task's own form of the answer (a label, not the teacher's
    # synonym), with the rationale only for target=rationale_answer.
    answer = task.target_answer(parsed)
    reason = parsed.rationale if config.synth.target == "rationale_answer" else None
    return {
        "id": example.id,
        "prompt": task.messages(example.inputs, prompt),
        "completion": [
            {"role": "assistant", "content": task.reply_text(answer.strip(), reason, prompt.style)}
        ],
    }


def accepted_row(
    task: Task,
    config: RunConfig,
    example: Example,
    parsed: Parsed,
    finish: str,
    error: str | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """The training row a teacher reply makes under `config.synth`, or why it makes none:
    the one rejection rule, for the synth stage and for every student variant alike."""
    reason = rejection_reason(parsed, finish, error, example, task, config)
    if reason:
        return None, reason
    row = training_row(task, config, example, parsed)
    reason = length_reason(row["completion"][0]["content"], config.synth)
    return (None, reason) if reason else (row, None)


@dataclass
class Labelled:
    """Everything the stage decided about one input."""

    record: dict[str, Any]  # its teacher.jsonl line
    row: dict[str, Any] | None  # its train.jsonl line, when accepted
    errors: list[ErrorRow]  # its errors.jsonl lines (failed calls)
    correct: float | None = None  # voted answer against the reference
    first_correct: float | None = None  # sample 0 alone against the reference


def _sample_json(
    task: Task, config: RunConfig, example: Example, i: int, r: ChatResponse
) -> dict[str, Any]:
    style = config.teacher.prompt.style
    parsed = task.parse(r.text or "", style, example.inputs) if r.ok else None
    return {
        "index": i,
        "reply": r.text,
        "status": parsed.status if parsed else "call_failed",
        "answer": parsed.answer if parsed else None,
        "finish_reason": r.finish_reason,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "error": r.error,
    }


def _base_record(example: Example, origin: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": example.id,
        "origin": origin,
        "inputs": example.inputs,
        "reference": example.reference,
        "reply": None,
        "status": None,
        "answer": None,
        "raw_answer": None,
        "rationale": None,
        "finish_reason": None,
        "error": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "rejected": None,
    }
    if origin == "generated":
        record["seed_id"] = example.id.split("~gen")[0]
    return record


def label(
    task: Task,
    config: RunConfig,
    example: Example,
    origin: str,
    replies: list[ChatResponse],
    teacher: TeacherCalls,
) -> Labelled:
    """Vote over an input's samples, apply the reply filters, build its rows."""
    style = config.teacher.prompt.style
    record = _base_record(example, origin)
    record["cost_usd"] = round(
        sum(call_cost(teacher.price, r.prompt_tokens, r.completion_tokens) for r in replies), 8
    )
    if len(replies) > 1:
        record["samples"] = [
            _sample_json(task, config, example, i, r) for i, r in enumerate(replies)
        ]
    failed = [(i, r) for i, r in enumerate(replies) if not r.ok]
    errors = [error_row(example.id, "label", call_failure(r), sample=i) for i, r in failed]
    if failed:  # voting on part of the samples would change once the rest are answered
        record.update(status="call_failed", error=failed[0][1].error, rejected="call_failed")
        return Labelled(record, None, errors)
    parsed = [task.parse(r.text or "", style, example.inputs) for r in replies]
    vote = majority_vote(parsed, [r.finish_reason for r in replies])
    chosen, reply = parsed[vote.chosen], replies[vote.chosen]
    if len(replies) > 1:
        record["votes"] = vote.votes
        record["chosen_sample"] = vote.chosen
    record.update(
        reply=reply.text,
        status=chosen.status,
        answer=chosen.answer,
        raw_answer=chosen.raw_answer,
        rationale=chosen.rationale,
        finish_reason=reply.finish_reason,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
    )
    row, reason = accepted_row(task, config, example, chosen, reply.finish_reason)
    record["rejected"] = reason
    correct = first = None
    if example.reference is not None and task.reference_match and origin == "train":
        correct = task.score(chosen, example.reference)
        first = task.score(parsed[0], example.reference)
    return Labelled(record, row, errors, correct, first)


def _generate(
    task: Task, config: RunConfig, train: list[Example], teacher: TeacherCalls
) -> tuple[list[Example], list[dict[str, Any]], list[ErrorRow]]:
    """New inputs written by the teacher: the examples, generated.jsonl lines, errors."""
    settings = config.synth.generate
    if settings is None:
        return [], [], []
    calls = generation_calls(task, settings, train)
    replies = teacher.answer("synth: new inputs", [c.request for c in calls])
    examples: list[Example] = []
    records: list[dict[str, Any]] = []
    errors: list[ErrorRow] = []
    for call, reply in zip(calls, replies):
        record: dict[str, Any] = {
            "id": call.id,
            "seed_id": call.seed.id,
            "reply": reply.text,
            "inputs": None,
            "rejected": None,
        }
        if not reply.ok:
            record["rejected"] = "call_failed"
            errors.append(error_row(call.id, "generate", call_failure(reply), sample=call.index))
        else:
            example, why = written_input(task, settings, call, reply.text or "")
            record.update(inputs=example.inputs if example else None, rejected=why)
            if example is not None:
                examples.append(example)
        records.append(record)
    return examples, records, errors


def _accuracy(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def run_synth(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    train: list[Example],
    test: list[Example] | None = None,
    transfer: dict[str, list[Example]] | None = None,
) -> dict[str, Any]:
    """Label `train` (and generated inputs) with the teacher; write teacher.jsonl,
    rejected.jsonl, errors.jsonl, generated.jsonl, train.jsonl, summary.json and card.md.

    Inputs that overlap the `test` split or a `transfer` set are never labelled. Raises
    StageIncomplete (after writing every file) when more calls failed than
    `synth.max_failed_fraction` allows.
    """
    teacher = TeacherCalls.open(run, config)
    try:
        generated, gen_records, gen_errors = _generate(task, config, train, teacher)
        plan = label_plan(task, config, train, generated, test or [], transfer)
        screened, to_label = plan.screened, plan.inputs
        inputs = [(e, "train") for e in train] + [(e, "generated") for e in generated]
        requests = plan.requests
        if requests and requests[0].logprobs:  # one call tells whether it sends logprobs
            where = config.teacher.model.base_url or "default"
            probe = teacher.answer("synth: logprobs check", requests[:1])
            require_logprobs(probe, requests[0].logprobs, where)
        replies = teacher.answer("synth: labels", requests)
    finally:
        teacher.close()
    n = config.synth.samples
    by_id = {e.id: replies[k * n : (k + 1) * n] for k, e in enumerate(to_label)}
    results = []
    for example, origin in inputs:
        if example.id in screened:
            record = _base_record(example, origin)
            record["rejected"], record["rejected_detail"] = screened[example.id]
            results.append(Labelled(record, None, []))
        else:
            results.append(label(task, config, example, origin, by_id[example.id], teacher))
    calls = len(gen_records) + len(replies)
    if config.synth.logprobs:
        _write_distributions(run, config, task, results, by_id, teacher)
    return _write_outputs(
        run, config, task, train, results, gen_records, gen_errors, teacher, calls
    )


def _write_distributions(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    results: list[Labelled],
    by_id: dict[str, list[ChatResponse]],
    teacher: TeacherCalls,
) -> None:
    """synth/logprobs.npz: the teacher's top-K at every token of every kept row
    (synth/logprobs.py); its counts go into the summary and the card."""
    k = int(config.synth.logprobs or 0)
    kept = [
        Kept(
            r.row,
            task.messages(r.record["inputs"], config.teacher.prompt),
            by_id[r.record["id"]][r.record.get("chosen_sample", 0)],
        )
        for r in results
        if r.row is not None
    ]
    store = CallStore(run.calls_db)
    try:
        tokenizer = None if config.teacher.model.backend == "local" else students_tokenizer(config)
        dists = teacher_distributions(kept, teacher.model, store, k, tokenizer)
    finally:
        store.close()
    write_distributions(run.synth_dir / DISTRIBUTIONS_FILE, dists)
    teacher.logprob_counts = {"k": k, "vocab": dists.vocab, "rows": dists.counts}


def students_tokenizer(config: RunConfig) -> Any:
    """The tokenizer an endpoint's token texts are mapped into: the first kd student's base
    model's (train checks every kd student shares it)."""
    from transformers import AutoTokenizer

    from potstill.models.packaged import resolve_local_ref

    kd = [s for s in config.students if s.train.loss != "sft"] or config.students
    return AutoTokenizer.from_pretrained(resolve_local_ref(kd[0].base.model))


def _write_outputs(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    train: list[Example],
    results: list[Labelled],
    gen_records: list[dict[str, Any]],
    gen_errors: list[ErrorRow],
    teacher: TeacherCalls,
    calls: int,
) -> dict[str, Any]:
    records = [TeacherRow.model_validate(r.record) for r in results]
    generated = [GeneratedInput.model_validate(g) for g in gen_records]
    rows = [TrainingRow.model_validate(r.row) for r in results if r.row is not None]
    rejected = [r for r in records if r.rejected]
    errors = gen_errors + [e for r in results for e in r.errors]
    reasons = Counter(r.rejected for r in rejected if r.rejected)
    gen_reasons = Counter(g.rejected for g in generated if g.rejected)
    figures = teacher_figures(records, task.kind, task.reference_match)
    synth_summary = SynthSummary(
        inputs=len(train),
        # Counted, never hidden: their replies cannot be checked against a reference.
        inputs_without_reference=sum(e.reference is None for e in train),
        generated_inputs=sum(g.inputs is not None for g in generated),
        accepted=len(rows),
        rejected=dict(reasons),
        generation_rejected=dict(gen_reasons),
        samples=config.synth.samples,
        teacher_accuracy_on_train=_accuracy([r.correct for r in results]),
        calls=calls,
        failed_calls=len(errors),
        failed_rows=reasons.get("call_failed", 0),
        teacher_completion_tokens=sum(r.completion_tokens for r in records),
        cost_usd=round(teacher.total.usd, 6),
        cost={
            **teacher.total.to_json(),
            "sent_this_run": teacher.sent.to_json(),
            "priced": teacher.price is not None,
            "mode": config.teacher.model.mode,
            "max_usd": config.budget.max_usd,
        },
        # The guard rails' figures and warnings (potstill/guards.py), for the CLI and the
        # report.
        checks=figures,
        warnings=teacher_warnings(figures, task.kind, config.checks),
    )
    if teacher.logprob_counts:
        synth_summary.logprobs = teacher.logprob_counts
    if config.synth.samples > 1:
        synth_summary.teacher_accuracy_on_train_first_sample = _accuracy(
            [r.first_correct for r in results]
        )
    summary = synth_summary.as_written()
    synth = run.synth_dir
    write_records(synth / "teacher.jsonl", records)
    write_records(synth / "rejected.jsonl", rejected)
    write_records(synth / "errors.jsonl", errors)
    write_records(synth / "generated.jsonl", generated)
    write_records(synth / "train.jsonl", rows)
    write_record(synth / "summary.json", synth_summary)
    atomic_write_text(synth / "card.md", render_card(config, synth_summary, rejected, generated))
    say(synth_sentence(summary, len(records)))
    for line in warning_lines("synth", summary["warnings"]):
        say(line)
    allowed = config.synth.max_failed_fraction * max(1, calls)
    if errors and len(errors) > allowed:
        raise StageIncomplete(
            f"synth: {len(errors)} teacher call(s) failed (see {synth / 'errors.jsonl'}); "
            f"run `potstill synth {run.root}` again to retry them",
            summary,
        )
    if not rows:
        _no_rows(run, reasons, len(records), calls, summary)
    return summary


def _no_rows(
    run: RunFolder, reasons: Counter[str], inputs: int, calls: int, summary: dict[str, Any]
) -> None:
    """Not one training row: exit 3 when only failed calls are to blame (a re-run retries
    them), else exit 2 with the main reasons (the same replies would come back)."""
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common(3))
    others = sum(reasons.values()) - sum(n for _, n in reasons.most_common(3))
    counts += f", {others} other" if others else ""
    where = run.synth_dir / "rejected.jsonl"
    if reasons and set(reasons) <= {"call_failed"}:
        raise StageIncomplete(
            f"synth: every teacher call failed ({counts}); see {run.synth_dir / 'errors.jsonl'} "
            f"and run `potstill synth {run.root}` again to retry them",
            summary,
        )
    raise StageFailed(
        f"synth: the teacher gave no usable training row for any of the {inputs} inputs "
        f"({calls} teacher calls; rejected: {counts}); each reply and why it was rejected "
        f"are in {where}. Change what they point at (the teacher, teacher.prompt, "
        "task.templates, the labels or synonyms of the task) and run again."
    )
