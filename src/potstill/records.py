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
from potstill.models.base import ChatResponse
from potstill.runs import read_json, read_jsonl, write_json, write_jsonl

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
