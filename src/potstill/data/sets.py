"""Evaluation sets from sources of their own: `dataset.test`, `dataset.dev` (a benchmark's
official split, a file, a hub dataset's `validation` split) and `evaluate.transfer` (other
data for the same task). Each is read by the same loader as the main source, so a bad row is
the same error naming its file, line and field."""

from __future__ import annotations

import random
import re
from pathlib import Path

from potstill.config import DatasetConfig, RunConfig, SourceConfig
from potstill.data.loading import DatasetError, Split, load_examples, split_examples
from potstill.tasks import Example, Task


def source_dataset(source: SourceConfig, main: DatasetConfig) -> DatasetConfig:
    """The DatasetConfig that reads `source`: its own file or hub dataset, or another split
    (or config) of the main hub dataset; its own field mapping, else the main one."""
    fields = main.fields if source.fields is None else source.fields
    if source.main_hub:
        return DatasetConfig(
            hub=main.hub_name,
            hub_config=source.hub_config or main.hub_config,
            hub_split=source.hub_split or main.hub_split,
            fields=fields,
            max_chars=main.max_chars,
        )
    return DatasetConfig(
        path=source.path,
        hub=source.hub,
        hub_config=source.hub_config,
        hub_split=source.hub_split or "train",
        fields=fields,
        max_chars=main.max_chars,
    )


def describe(source: SourceConfig, main: DatasetConfig) -> str:
    """Where a set comes from, in words for the report: a file, or `hf:name` and its split."""
    config = source_dataset(source, main)
    hub = config.hub_name
    if hub is None:
        return str(config.path)
    detail = ", ".join(filter(None, (config.hub_config, f"split {config.hub_split}")))
    return f"hf:{hub} ({detail})"


def load_source(
    source: SourceConfig,
    main: DatasetConfig,
    task: Task,
    base_dir: Path = Path(),
    where: str = "dataset.test",
) -> list[Example]:
    """Every example of `source` (a seeded sample of `source.size` when set), validated; an
    error names the config key of the set (`where`) before the file, line and field."""
    try:
        examples = load_examples(source_dataset(source, main), task, base_dir)
    except DatasetError as exc:
        message = str(exc)
        if source.fields is not None:  # the mapping at fault is the set's own
            message = re.sub(r"\bdataset\.fields\b", f"{where}.fields", message)
        raise DatasetError(f"{where}: {message}") from None
    if source.size is None or source.size >= len(examples):
        return examples
    order = sorted(examples, key=lambda e: e.id)
    random.Random(main.seed).shuffle(order)
    return order[: source.size]


def load_split(config: DatasetConfig, task: Task, base_dir: Path = Path()) -> Split:
    """The train / test (/ dev) split: a test or dev set of its own source replaces the part
    drawn at random, so the main source is all training data (bar a random dev part when
    only `dev_size` is set)."""
    test = dev = None
    if config.test is not None:
        test = load_source(config.test, config, task, base_dir, "dataset.test")
    if config.dev is not None:
        dev = load_source(config.dev, config, task, base_dir, "dataset.dev")
    return split_examples(load_examples(config, task, base_dir), config, test=test, dev=dev)


def load_transfer(
    config: RunConfig, task: Task, base_dir: Path = Path()
) -> dict[str, list[Example]]:
    """Each transfer set's examples, by set name, in config order."""
    return {
        source.name: load_source(source, config.dataset, task, base_dir, f"evaluate.transfer.{i}")
        for i, source in enumerate(config.evaluate.transfer)
    }
