"""Evaluation sets from sources of their own: `dataset.test`, `dataset.dev` (a benchmark's
official split, a file, a hub dataset's `validation` split) and `evaluate.transfer` (other
data for the same task). Each is read by the same loader as the main source, so a bad row is
the same error naming its file, line and field."""

from __future__ import annotations

import hashlib
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


def _source_paths(config: RunConfig) -> dict[str, DatasetConfig]:
    """Every source a run reads, by its config key: the main dataset, the test and dev
    sources, the transfer sets."""
    sources = {"dataset": config.dataset}
    for part in ("test", "dev"):
        source = getattr(config.dataset, part)
        if source is not None:
            sources[f"dataset.{part}"] = source_dataset(source, config.dataset)
    for i, transfer in enumerate(config.evaluate.transfer):
        sources[f"evaluate.transfer.{i}"] = source_dataset(transfer, config.dataset)
    return sources


def local_source(config: DatasetConfig) -> Path | None:
    """The file or folder a source is read from, if it is on this machine (a generator, or a
    dataset that `datasets` fetches from the hub, is not)."""
    name = config.path if config.hub_name is None else config.hub_name
    if name is None:
        return None
    path = Path(name)
    return path if path.exists() else None


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes; of a folder, of its files' relative paths and bytes."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file != path:  # a folder's file: its name counts too
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def source_digests(config: RunConfig) -> dict[str, dict[str, str]]:
    """What each local source holds now, by config key: its path and content digest. A
    source that is not on this machine (a hub dataset, a generator) is given by its config,
    which the split's fingerprint already covers."""
    found = {}
    for key, source in _source_paths(config).items():
        path = local_source(source)
        if path is not None:
            found[key] = {"path": str(path), "sha256": content_digest(path)}
    return found
