"""The records stages write into a run folder and read back: one pydantic model per kind of
row or file, with a schema version, built by the writer and parsed by every reader.

A record is a `Record` subclass; its `VERSION` is written with it, as the key
`schema_version` of every JSON object (each line of a JSONL file, the whole of a JSON
file). Writers call `write_record` / `write_records`; readers call `read_record` /
`read_records`, which give back the models and say in one line what is wrong with a file
that is not one: a schema version newer than this potstill reads (`NewerRunFile`: upgrade
potstill), none at all (a file written before records were versioned, or by hand) or a key
missing, extra or of the wrong type (`DamagedRunFile`, naming the file, line and key, and
what to do). A record whose shape changes gets the next `VERSION`.

`docs/architecture.md` ("Records") lists each file, its record, and which stage writes and
which reads it.

`synth/errors.jsonl` and `eval/errors.jsonl` hold one `ErrorRow` per call that failed after
its retries (failed calls are not stored, so a re-run retries them): `id` (the example or
generated input), `phase` (`label`, `generate`, `predict`, `judge_pointwise`,
`judge_pairwise_candidate_first` / `_second`), `status` (the failure's kind: timeout,
connection, http_500, not_sent, ... or `error`), `reason` (its message, key redacted) and
`attempts`; synth adds the `sample` index, evaluate the `candidate` and, for a transfer set,
its `transfer_set`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from potstill.errors import UserError, damaged
from potstill.files import read_json, read_jsonl, write_json, write_jsonl
from potstill.models.base import ChatResponse

VERSION_KEY = "schema_version"


class NewerRunFile(UserError, ValueError):
    """A run file written by a newer potstill, with a schema this one does not read."""


class Record(BaseModel):
    """One row of a JSONL run file, or a whole JSON run file; `VERSION` is its schema's."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    VERSION: ClassVar[int] = 1

    def dump(self) -> dict[str, Any]:
        """The JSON object written for it, its schema version included."""
        return {**self.model_dump(mode="json"), VERSION_KEY: self.VERSION}


R = TypeVar("R", bound=Record)


def parse_record(path: Path, data: Mapping[str, Any], model: type[R], line: int | None = None) -> R:
    """`data` (a JSON object read from `path`, at `line` of a JSONL file) as a `model`, or
    the one-line error saying why it is not one."""
    where = f"{path}:{line}" if line is not None else str(path)
    version = data.get(VERSION_KEY)
    if version is None:
        raise damaged(path, f"it has no {VERSION_KEY} (not a {model.__name__} record)", line)
    if not isinstance(version, int) or isinstance(version, bool):
        raise damaged(path, f"its {VERSION_KEY} {version!r} is not a whole number", line)
    if version > model.VERSION:
        raise NewerRunFile(
            f"{where}: schema version {version} of {model.__name__} is newer than this "
            f"potstill reads ({model.VERSION}); upgrade potstill to read this run"
        )
    fields = {k: v for k, v in data.items() if k != VERSION_KEY}
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(the whole object)"
        raise damaged(
            path, f"key `{key}`: {first['msg']} (a {model.__name__} record)", line
        ) from None


def write_record(path: Path, record: Record) -> None:
    """Write one record as a whole JSON file."""
    write_json(path, record.dump())


def write_records(path: Path, records: Iterable[Record]) -> None:
    """Write records as a JSONL file, one a line, whole or not at all."""
    write_jsonl(path, (record.dump() for record in records))


def read_record(path: Path, model: type[R]) -> R:
    """A JSON file written by `write_record`, as its model."""
    return parse_record(path, read_json(path), model)


def read_records(path: Path, model: type[R]) -> list[R]:
    """A JSONL file written by `write_records`, each line as its model."""
    rows = read_jsonl(path)
    # read_jsonl skips blank lines; number the rest as they are in the file.
    numbers = [
        n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text.strip()
    ]
    return [
        parse_record(path, row, model, number) for number, row in zip(numbers, rows, strict=True)
    ]


class ErrorRow(Record):
    """One line of synth/errors.jsonl or eval/errors.jsonl: a call that failed."""

    id: str
    phase: str
    status: str
    reason: str
    attempts: int | None = None
    sample: int | None = None  # synth: which of the example's samples
    candidate: str | None = None  # evaluate: whose call
    transfer_set: str | None = None  # evaluate: on which transfer set, if not the test split


def call_failure(response: ChatResponse) -> dict[str, Any]:
    """A failed call's error as a record keeps it (`error`, `error_kind`, `attempts`);
    nothing if it was answered."""
    if response.error is None:
        return {}
    return {
        "error": response.error,
        "error_kind": response.error_kind,
        "attempts": response.attempts,
    }


def error_row(key: str, phase: str, failure: Mapping[str, Any], **where: Any) -> ErrorRow:
    """One errors.jsonl row from a record's failure (`call_failure`'s keys): which call failed
    (`key`, `phase` and `where`: sample, candidate, transfer_set), how (`status`) and why
    (`reason`)."""
    return ErrorRow(
        id=key,
        phase=phase,
        status=failure.get("error_kind") or "error",
        reason=failure["error"],
        attempts=failure.get("attempts"),
        **where,
    )


class Part(BaseModel):
    """A nested object of a record: its keys are checked too, the version is the record's."""

    model_config = ConfigDict(extra="forbid")


class AsBuilt(Record):
    """A record written with the keys its writer set: an optional part that was never there
    (no judge, no transfer set) stays out of the file rather than being written as null."""

    def dump(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude_unset=True), VERSION_KEY: self.VERSION}

    def as_written(self) -> dict[str, Any]:
        """The record as its writer built it, for code that reads it as a mapping."""
        return self.model_dump(mode="json", exclude_unset=True)


# the run folder
#
# manifest.json: one `Manifest`, written by `runs.RunFolder` (each stage's record as it
# finishes, the config's hash, the package versions, the data split's sources).


class StageRecord(Part):
    """A stage's entry in the manifest: done or incomplete, for which inputs, how long, what
    it returned (its summary) and what it spent."""

    status: str  # done | incomplete
    fingerprint: str
    seconds: float
    finished_at: str
    result: dict[str, Any] | None = None
    cost_usd: float | None = None


class Manifest(AsBuilt):
    """manifest.json: what ran, with which settings and packages, and on which data."""

    stages: dict[str, StageRecord] = {}
    config_hash: str | None = None
    versions: dict[str, str] | None = None
    data: dict[str, Any] | None = None  # the split's pin and sources (pipeline.py)


# synth
#
# synth/teacher.jsonl: one `TeacherRow` an input (rejected ones too; synth/rejected.jsonl
# repeats the rejected ones); synth/generated.jsonl: one `GeneratedInput` a request for a new
# input; synth/train.jsonl and students/<name>/train.jsonl: one `TrainingRow` a kept reply;
# synth/summary.json: one `SynthSummary`.


class Message(Part):
    role: str
    content: str


class Sample(Part):
    """One of an input's samples, when synth.samples > 1 (the vote is over these)."""

    index: int
    reply: str | None
    status: str
    answer: Any = None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


class TeacherRow(AsBuilt):
    """The teacher's labelling of one input: the reply it voted for, what the task read from
    it, its cost, and why it was rejected (None: it became a training row)."""

    id: str
    origin: str  # train | generated
    inputs: dict[str, Any]
    reference: Any = None
    reply: str | None
    status: str | None  # ok | no_answer | malformed | call_failed; None: screened, not asked
    answer: Any = None
    raw_answer: Any = None
    rationale: str | None = None
    finish_reason: str | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    rejected: str | None  # the rejection rule's reason (synth/filters.py)
    rejected_detail: str | None = None  # screened inputs: what they overlap
    seed_id: str | None = None  # generated inputs: the training example they were written from
    samples: list[Sample] | None = None
    votes: dict[str, int] | None = None
    chosen_sample: int | None = None


class GeneratedInput(AsBuilt):
    """One request for a new input (synth.generate): the teacher's reply and the input read
    from it, or why none was."""

    id: str
    seed_id: str
    reply: str | None
    inputs: dict[str, Any] | None
    rejected: str | None


class TrainingRow(AsBuilt):
    """A conversational prompt/completion row, in the form TRL's trainers take; a student's
    own variant of the rows (train/data.py) keeps the rationale it was built with."""

    id: str
    prompt: list[Message]
    completion: list[Message]
    rationale: str | None = None

    def as_example(self) -> dict[str, Any]:
        """The row as a trainer (and a Hub dataset) takes it: no schema version."""
        return self.as_written()


def write_training_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Training rows (as the trainers take them) into a train.jsonl, each checked as a
    `TrainingRow`."""
    write_records(path, (TrainingRow.model_validate(row) for row in rows))


def read_training_rows(path: Path) -> list[dict[str, Any]]:
    """A train.jsonl's rows, parsed, as the trainers take them (no schema version)."""
    return [row.as_example() for row in read_records(path, TrainingRow)]


class SynthSummary(AsBuilt):
    """synth/summary.json: how many inputs became rows, why the others did not, the
    teacher's accuracy on the training split, calls, cost and the guard rails' checks."""

    inputs: int
    inputs_without_reference: int
    generated_inputs: int
    accepted: int
    rejected: dict[str, int]
    generation_rejected: dict[str, int]
    samples: int
    teacher_accuracy_on_train: float | None
    teacher_accuracy_on_train_first_sample: float | None = None
    calls: int
    failed_calls: int
    failed_rows: int
    teacher_completion_tokens: int
    cost_usd: float
    cost: dict[str, Any]  # calls, tokens, usd, sent_this_run, priced, mode, max_usd
    logprobs: dict[str, Any] | None = None  # k, vocab, rows (synth/logprobs.py)
    checks: dict[str, Any]  # guards.teacher_figures
    warnings: list[dict[str, str]]


# train
#
# students/<name>/summary.json: one `TrainSummary`; students/<name>/train_log.jsonl: one
# `TrainLogEntry` a logged step.


class TrainSummary(AsBuilt):
    """A trained student: its rows, steps, losses, time, tokens, and the checks' figures."""

    rows: int
    dev_rows: int
    too_long: int
    data: dict[str, Any]  # train/data.StudentRows.describe
    steps: int
    max_steps: int
    warmup_steps: int
    train_loss: float | None
    last_loss: float | None
    eval_loss: float | None
    seconds: float | None
    batching: str
    attention: str | None  # the attention kernel asked for; None: the model's default
    real_tokens: int
    tokens_seen: int
    real_tokens_per_second: float | None
    resumed_from: str | None
    world_size: int
    method: str
    loss: str
    kd_rows_without_teacher: int | None
    base: str
    fingerprint: str
    rank_weights: list[str] | None
    checks: dict[str, Any]  # guards.student_figures
    warnings: list[dict[str, str]]


class TrainLogEntry(AsBuilt):
    """One entry of the trainer's log history that has a loss (the trainer's own keys:
    step, epoch, learning rate, grad norm, token accuracy... differ by trainer and version)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    step: int
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    train_loss: float | None = None


# evaluate
#
# eval/predictions/<candidate>.jsonl (and eval/transfer/<set>/predictions/): one `Prediction`
# a test example; eval/judge/<candidate>.jsonl: one `JudgeRecord` a judged example;
# eval/scores.json: one `Scores`. Evaluate builds its figures as plain mappings while it
# computes them (pitfalls and the judge's trust edit them in place) and writes them through
# these models; every reader parses them back.


Score = float | int  # kept as written: an int stays an int, so a figure reads back the same


class Prediction(AsBuilt):
    """One candidate's reply to one example, parsed and scored."""

    id: str
    reply: str | None
    error: str | None = None
    error_kind: str | None = None
    attempts: int | None = None
    status: str  # ok | no_answer | malformed | call_failed
    answer: Any = None  # the task's parsed answer (a number, a label, text)
    raw_answer: Any = None
    flexible_answer: Any = None
    reference: Any = None
    score: Score | None = None  # the task's headline metric for this example
    flexible_score: Score | None = None
    scores: dict[str, Score] = {}  # every per-example metric, the judge's included
    finish_reason: str | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    latency_s: float | None = None


class JudgeCall(Part):
    """One judge call's reply and what was read from it; a failed call keeps its error."""

    reply: str | None
    status: str | None = None  # pointwise: ok | no_answer | malformed
    score: int | None = None  # pointwise: the rubric score, 1-5
    reason: str | None = None  # pointwise: the judge's reason
    verdict: str | None = None  # pairwise: A | B | tie, as read
    error: str | None = None
    error_kind: str | None = None
    attempts: int | None = None


class JudgePair(Part):
    """A pairwise comparison against `vs`, asked in both orders."""

    vs: str
    candidate_first: JudgeCall
    candidate_second: JudgeCall
    outcome: str | None  # win | tie | loss, or None when the two orders give no verdict
    flipped: bool


class JudgeRecord(AsBuilt):
    """The judge's verdicts on one candidate's reply to one sampled example."""

    id: str
    pointwise: JudgeCall | None = None
    pairwise: JudgePair | None = None


class MetricEntry(Part):
    """One metric of a candidate: mean (or corpus value), 95% interval and its method, n."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    interval: str | None = None  # wilson | bootstrap
    n: int
    higher_is_better: bool = True
    percent: bool = False


class PairedDifference(Part):
    """A difference a - b on the same examples with its interval (`stats.paired_difference`);
    for 0/1 scores the right/wrong counts and exact McNemar p."""

    n: int
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    interval: str
    a_only_correct: int | None = None
    b_only_correct: int | None = None
    both_correct: int | None = None
    mcnemar_p: float | None = None


class Comparison(PairedDifference):
    """Candidate `a` against `b` on the headline `metric` (strict parsing), the flexible
    reading, and every metric both have."""

    a: str
    b: str
    metric: str
    flexible: PairedDifference
    metrics: dict[str, PairedDifference] = {}


class Confusion(Part):
    """Rows are references, columns predictions (+ no answer)."""

    labels: list[str]
    columns: list[str]
    matrix: list[list[int]]


class CandidateSummary(Part):
    """A candidate on one evaluation set: its metrics with intervals, rates, how it was
    asked, cost and latency, and the judge's figures."""

    n: int
    no_answer_rate: float
    malformed_rate: float
    call_failed_rate: float
    mean_completion_tokens: float
    mean_prompt_tokens: float
    mean_latency_s: float
    p95_latency_s: float
    metrics: dict[str, MetricEntry]
    confusion: Confusion | None = None  # classification
    role: str
    model: str
    backend: str
    prompt_style: str
    shots: int
    max_tokens: int | None
    procedure: str | None
    base: str | None
    identity: str
    requests_measured: int
    tokens_per_s: float | None
    seconds_per_1k_requests: float | None
    cost_per_1k_requests: float | None
    cost_basis: str
    judge: dict[str, Any] | None = None  # pointwise / pairwise counts, rates (judgments.py)


class TransferScores(Part):
    """One transfer set, shaped like the test split's results."""

    source: str
    n: int
    candidates: dict[str, CandidateSummary]
    comparisons: list[Comparison]


class Scores(AsBuilt):
    """eval/scores.json: every candidate's results on the test split and transfer sets, the
    paired comparisons, the judge, the pitfall checks and their warnings."""

    candidates: dict[str, CandidateSummary]
    comparisons: list[Comparison]
    transfer: dict[str, TransferScores] | None = None
    order: list[str]  # the candidates in the config's order
    task: str
    headline: str
    metric_order: list[str]
    calculator: bool | None = None
    local_price_per_hour: float
    judge: dict[str, Any] | None = None  # settings, bias, trusted, reasons (judgments.py)
    checks: dict[str, Any]  # every check's numbers (pitfalls.py, guards.py)
    warnings: list[dict[str, str]]  # check, subject, message
    failed_calls: int
    calls: int
