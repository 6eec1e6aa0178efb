"""train.loss on_policy: the student learns the teacher's distributions on its own tokens.

The student, from its starting weights, samples `train.on_policy_samples` completions for
each training input (the students' prompt, `synth.prompt`, at `train.on_policy_temperature`);
the local teacher scores every token of each sample under its own prompt (teacher forcing,
its top-K, `synth.logprobs`); the student then trains on those rows with the KL term alone
(kd_alpha 1: cross-entropy on its own samples would only reinforce them). This is one round
of generalized KD (the student's samples are on-policy at the first step and drift from it as
it learns; TRL's GKD resamples every step, at the cost of generation inside each step).
Samples and scores go through the call store, so a killed run resamples nothing, and the
training resumes from its checkpoint like SFT's.
"""

from __future__ import annotations

from typing import Any

from potstill.config import RunConfig, StudentConfig
from potstill.models import build_model, chunk_size
from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.callstore import CallStore, answer_all
from potstill.progress import call_meter
from potstill.records import TeacherRow
from potstill.runs import RunFolder
from potstill.synth.logprobs import (
    RESCORED,
    Kept,
    TeacherDistributions,
    teacher_distributions,
)
from potstill.tasks import Task


def _sample_requests(
    config: RunConfig, student: StudentConfig, rows: list[dict[str, Any]]
) -> list[ChatRequest]:
    t, prompt = student.train, config.synth.prompt
    return [
        ChatRequest(row["prompt"], prompt.max_tokens, t.on_policy_temperature, sample_index=s)
        for row in rows
        for s in range(t.on_policy_samples)
    ]


def on_policy_rows(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    student: StudentConfig,
    rows: list[dict[str, Any]],
    teacher_records: dict[str, TeacherRow],
) -> tuple[list[dict[str, Any]], TeacherDistributions]:
    """The student's sampled rows (`<id>~p<j>`) and the teacher's distributions on them."""
    k = int(config.synth.logprobs or 0)
    requests = _sample_requests(config, student, rows)
    store = CallStore(run.calls_db)
    try:
        model = build_model(student.base)
        with call_meter(f"train[{student.name}]: samples", len(requests)) as meter:
            answers = answer_all(
                model,
                store,
                requests,
                chunk_size(student.base),
                on_answer=lambda i, r, fresh: meter.answered(r.ok, 0.0) if fresh else None,
            )
        del model
        samples, kept = [], []
        n = student.train.on_policy_samples
        for i, answer in enumerate(answers):
            if not answer.ok or not answer.text:
                continue
            row = rows[i // n]
            sample = {
                "id": f"{row['id']}~p{i % n}",
                "prompt": row["prompt"],
                "completion": [{"role": "assistant", "content": answer.text}],
            }
            inputs = teacher_records[str(row["id"])].inputs
            # No teacher reply to align with: the sample is scored as the teacher's reply to
            # its own prompt, every token with a distribution.
            no_reply = ChatResponse(None)
            kept.append(Kept(sample, task.messages(inputs, config.teacher.prompt), no_reply))
            samples.append(sample)
        teacher = build_model(config.teacher.model)
        dists = teacher_distributions(kept, teacher, store, k)
    finally:
        store.close()
    dists.counts = {"sampled": len(samples), RESCORED: dists.counts.get(RESCORED, 0)}
    return samples, dists
