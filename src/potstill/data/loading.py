"""Datasets: examples from JSONL / CSV / Parquet, the Hugging Face hub, or a generator."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from potstill.config import DatasetConfig
from potstill.errors import UserError, damaged
from potstill.files import read_jsonl
from potstill.tasks.base import Example, Task

Rows = Iterator[tuple[str, dict[str, Any]]]  # (where: "file:line" or "source row N", row)


class DatasetError(UserError, ValueError):
    """Bad input data; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Split:
    train: list[Example]
    test: list[Example]
    dev: list[Example] = field(default_factory=list)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, not a dataset file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc.strerror})") from None


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a byte-order mark is allowed); else an error naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
        ) from None


def _rows_jsonl(path: Path) -> Rows:
    text = _decode(path, _read_bytes(path))
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DatasetError(f"{path}:{number}: JSON nested too deeply to read") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: each line must be a JSON object")
        yield f"{path}:{number}", row


def _rows_csv(path: Path) -> Rows:
    # The csv module refuses cells over 128 KiB; long cells are checked against
    # dataset.max_chars instead, with a message that names the field.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    # strict: a quote that is never closed is an error, not a cell that swallows the rest of
    # the file.
    text = io.StringIO(_decode(path, _read_bytes(path)), newline="")
    reader = csv.DictReader(text, strict=True)
    ended = 0  # the line where the header or the last good row ended
    try:
        reader.fieldnames  # noqa: B018 (reads the header)
        ended = reader.line_num
        for row in reader:
            # line_num is the physical line where this row ends (quoted cells may span lines)
            yield f"{path}:{reader.line_num}", {k: v for k, v in row.items() if k is not None}
            ended = reader.line_num
    except csv.Error as exc:
        raise DatasetError(
            f"{path}:{ended + 1}: not valid CSV in the row that starts here ({exc})"
        ) from None


def _rows_parquet(path: Path) -> Rows:
    # pyarrow (which `datasets` reads Parquet with) directly: no cache folder is written, and
    # a damaged file is one message here rather than a logged error and then this one.
    import pyarrow.parquet as pq

    _read_bytes(path)  # unreadable files fail with a clear message first
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
    for number, row in enumerate(rows, start=1):
        yield f"{path} row {number}", dict(row)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _rows_hub(name: str, config: DatasetConfig) -> Rows:
    """A dataset through `datasets.load_dataset`: a hub name, or a local folder of data files."""
    from datasets import load_dataset

    source = f"hf:{name}"
    try:
        data = load_dataset(name, config.hub_config, split=config.hub_split)
    except Exception as exc:  # hub, network and format errors all end the same way for a user
        raise DatasetError(
            f"{source}: cannot load this dataset with `datasets` ({_one_line(exc)}). "
            "Offline? Download it once, or point dataset.path at a local .jsonl/.csv/.parquet "
            "file."
        ) from None
    for number, row in enumerate(data, start=1):
        yield f"{source} row {number}", dict(row)


def _raw_rows(config: DatasetConfig, base_dir: Path) -> tuple[str, Rows]:
    if config.generator is not None:
        from potstill.data.stories import make_problems

        source = f"generator:{config.generator.name}"
        rows = make_problems(config.generator.size, config.generator.seed)
        return source, ((f"{source} row {i}", r) for i, r in enumerate(rows, start=1))
    hub = config.hub_name
    if hub is not None:
        return f"hf:{hub}", _rows_hub(hub, config)
    assert config.path is not None
    path = Path(config.path)
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file")
    readers = {".jsonl": _rows_jsonl, ".csv": _rows_csv, ".parquet": _rows_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path}: unknown dataset format; use .jsonl, .csv or .parquet")
    return str(path), reader(path)


def read_rows(config: DatasetConfig, base_dir: Path = Path()) -> tuple[str, Rows]:
    """A dataset source's rows as read, before any field mapping: (source, rows)."""
    return _raw_rows(config, base_dir)


def _text(value: Any) -> str:
    """A cell as text: structured values (lists of options, chat turns) as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _cell(row: dict[str, Any], column: str | list[str]) -> Any:
    """The value of a column; a list of columns gathers their non-empty values in a list."""
    if isinstance(column, list):
        values = [row.get(c) for c in column]
        present = [v for v in values if v is not None and str(v).strip() != ""]
        return present if any(c in row for c in column) else None
    return row.get(column)


def _label(task_field: str, column: str | list[str]) -> str:
    if column == task_field:
        return repr(task_field)
    return f"{column!r} (the task's {task_field!r})"


def load_examples(config: DatasetConfig, task: Task, base_dir: Path = Path()) -> list[Example]:
    """All examples, validated: a bad row is an error naming source, line and field."""
    known = (*task.input_fields, *task.optional_fields, "answer", "id")
    unknown = sorted(set(config.fields) - set(known))
    if unknown:
        raise DatasetError(
            f"dataset.fields: {unknown} not fields of a {task.kind} task; it has {list(known)}"
        )
    source, rows = _raw_rows(config, base_dir)
    columns: dict[str, str | list[str]] = {f: config.fields.get(f, f) for f in known}
    examples: list[Example] = []
    seen: dict[str, str] = {}
    file_columns: dict[str, None] = {}  # every column any row has, in order of appearance
    for where, row in rows:
        file_columns.update(dict.fromkeys(row))
        example = _example(where, row, columns, task, config.max_chars)
        if example.id in seen:
            what = "id" if _cell(row, columns["id"]) is not None else "input (no id column)"
            raise DatasetError(
                f"{where}: duplicate {what} {example.id!r}, first seen at {seen[example.id]}"
            )
        seen[example.id] = where
        examples.append(example)
    if not examples:
        raise DatasetError(f"{source}: no examples")
    _check_mapped_columns(source, config.fields, list(file_columns))
    return examples


def _check_mapped_columns(
    source: str, fields: dict[str, str | list[str]], file_columns: list[str]
) -> None:
    """A field mapped in `dataset.fields` to a column that no row has is an error: otherwise
    every reference (or option, or id) would silently be missing."""
    for name, column in fields.items():
        wanted = column if isinstance(column, list) else [column]
        if any(c in file_columns for c in wanted):
            continue
        what = "columns" if isinstance(column, list) else "column"
        raise DatasetError(
            f"{source}: dataset.fields.{name} names {what} {column!r}, which no row has; "
            f"the columns are {file_columns}"
        )


def _field_text(where: str, label: str, value: Any, max_chars: int) -> str:
    """A cell as text; refused when longer than `max_chars` or not valid Unicode."""
    text = _text(value)
    if len(text) > max_chars:
        raise DatasetError(
            f"{where}: field {label} has {len(text):,} characters, over dataset.max_chars "
            f"({max_chars:,})"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. JSON "\\ud800"
        raise DatasetError(
            f"{where}: field {label} is not valid Unicode text ({exc.reason} at character "
            f"{exc.start + 1})"
        ) from None
    return text


def _example(
    where: str, row: dict[str, Any], columns: dict[str, Any], task: Task, max_chars: int
) -> Example:
    inputs: dict[str, str] = {}
    for name in (*task.input_fields, *task.optional_fields):
        value = _cell(row, columns[name])
        required = name in task.input_fields
        label = _label(name, columns[name])
        if value is None:
            if required:
                raise DatasetError(f"{where}: field {label} is missing")
            continue
        text = _field_text(where, label, value, max_chars)
        if not text.strip() or text in ("[]", "{}"):
            if required:
                raise DatasetError(f"{where}: field {label} is empty")
            continue
        inputs[name] = text
    problem = task.check_inputs(inputs)
    if problem:
        name, why = problem
        raise DatasetError(f"{where}: field {_label(name, columns[name])}: {why}")
    reference = _cell(row, columns["answer"])
    if reference is not None and str(reference).strip() != "":
        label = _label("answer", columns["answer"])
        reference = _field_text(where, label, reference, max_chars)
        why_not = task.check_reference(reference, inputs)
        if why_not:
            raise DatasetError(f"{where}: field {label}: {why_not}")
        reference = task.canonical_reference(reference, inputs)
    else:
        reference = None
    given = _cell(row, columns["id"])
    if given is not None and str(given).strip() == "":
        raise DatasetError(f"{where}: field {_label('id', columns['id'])} is empty")
    example_id = (
        _field_text(where, _label("id", columns["id"]), given, max_chars)
        if given is not None
        else _derived_id(inputs)
    )
    return Example(example_id, inputs, reference)


def _derived_id(inputs: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def split_examples(
    examples: list[Example],
    config: DatasetConfig,
    test: list[Example] | None = None,
    dev: list[Example] | None = None,
) -> Split:
    """A seeded train/test(/dev) split; the same config always gives the same split. A
    `test` (or `dev`) set from a source of its own is used as it is, and no part of
    `examples` is drawn for it."""
    test_size = 0 if test is not None else config.test_size
    dev_size = 0 if dev is not None else config.dev_size
    held_out = test_size + dev_size
    if held_out >= len(examples):
        drawn = " + ".join(
            f"dataset.{name} {size}"
            for name, size, given in (
                ("test_size", config.test_size, test),
                ("dev_size", config.dev_size, dev),
            )
            if given is None
        )
        raise DatasetError(
            f"{drawn} leaves no training examples out of {len(examples)}"
            if held_out
            else "the dataset has no training examples"
        )
    order = sorted(examples, key=lambda e: e.id)
    random.Random(config.seed).shuffle(order)
    drawn_test, drawn_dev, train = (
        order[:test_size],
        order[test_size:held_out],
        order[held_out:],
    )
    if config.train_size is not None:
        train = train[: config.train_size]
    return Split(
        train=train,
        test=drawn_test if test is None else test,
        dev=drawn_dev if dev is None else dev,
    )


def read_examples(path: Path) -> list[Example]:
    """A pinned split or set that potstill wrote (`data/*.jsonl`): every row an example with
    an id and inputs, or the file is damaged (a DamagedRunFile naming it and what to do)."""
    examples = []
    for number, row in enumerate(read_jsonl(path), 1):
        try:
            examples.append(Example.from_json(row))
        except (KeyError, TypeError, ValueError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else "inputs that are not fields"
            raise damaged(path, f"row {number} is not an example ({what})") from None
    return examples
