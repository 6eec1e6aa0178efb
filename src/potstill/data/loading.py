"""Datasets: examples from JSONL / CSV / Parquet, the Hugging Face hub, or a generator."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from potstill.config import DatasetConfig
from potstill.tasks.base import Example, Task


class DatasetError(ValueError):
    """Bad input data; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Split:
    train: list[Example]
    test: list[Example]


def _rows_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: each line must be a JSON object")
            yield number, row


def _rows_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield number, dict(row)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 ({exc.reason})") from None


def _rows_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from datasets import Dataset

    for number, row in enumerate(Dataset.from_parquet(str(path)), start=1):
        yield number, dict(row)


def _rows_hub(name: str, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    from datasets import load_dataset

    for number, row in enumerate(load_dataset(name, split=split), start=1):
        yield number, dict(row)


def _raw_rows(
    config: DatasetConfig, base_dir: Path
) -> tuple[str, Iterator[tuple[int, dict[str, Any]]]]:
    if config.generator is not None:
        from potstill.data.stories import make_problems

        rows = make_problems(config.generator.size, config.generator.seed)
        return f"generator:{config.generator.name}", enumerate(rows, start=1)
    if config.hub is not None:
        return f"hub:{config.hub}", _rows_hub(config.hub, config.hub_split)
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


def load_examples(config: DatasetConfig, task: Task, base_dir: Path = Path()) -> list[Example]:
    """All examples, validated: a bad row is an error naming source, line and field."""
    source, rows = _raw_rows(config, base_dir)
    fields = {f: config.fields.get(f, f) for f in (*task.input_fields, "answer", "id")}
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        where = f"{source}:{number}"
        inputs: dict[str, str] = {}
        for field in task.input_fields:
            column = fields[field]
            value = row.get(column)
            if value is None or str(value).strip() == "":
                raise DatasetError(f"{where}: field {column!r} is missing or empty")
            inputs[field] = str(value)
        reference = row.get(fields["answer"])
        if reference is not None:
            reference = str(reference)
            problem = task.check_reference(reference)
            if problem:
                raise DatasetError(f"{where}: field {fields['answer']!r}: {problem}")
        given = row.get(fields["id"])
        example_id = str(given) if given is not None else _derived_id(inputs)
        if example_id in seen:
            raise DatasetError(
                f"{where}: duplicate id {example_id!r} (first at line {seen[example_id]})"
            )
        seen[example_id] = number
        examples.append(Example(example_id, inputs, reference))
    if not examples:
        raise DatasetError(f"{source}: no examples")
    return examples


def _derived_id(inputs: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def split_examples(examples: list[Example], config: DatasetConfig) -> Split:
    """A seeded train/test split; the same config always gives the same split."""
    if config.test_size >= len(examples):
        raise DatasetError(
            f"test_size {config.test_size} leaves no training examples out of {len(examples)}"
        )
    order = sorted(examples, key=lambda e: e.id)
    random.Random(config.seed).shuffle(order)
    test, train = order[: config.test_size], order[config.test_size :]
    if config.train_size is not None:
        train = train[: config.train_size]
    return Split(train=train, test=test)
