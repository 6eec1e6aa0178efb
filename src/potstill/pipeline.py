"""One run, five stages: each reads the previous stage's files and can be re-run alone."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from potstill.config import ModelConfig, RunConfig
from potstill.data.loading import Split, load_examples, split_examples
from potstill.models.openai_backend import MissingKeyError
from potstill.progress import console, duration
from potstill.runs import (
    STAGES,
    RunFolder,
    StageIncomplete,
    StageOrderError,
    atomic_write_text,
    is_main_process,
    read_jsonl,
    timed,
    world_size,
    write_jsonl,
)
from potstill.summaries import evaluate_table, say
from potstill.tasks import Example, build_task


def absolutize(config: RunConfig, base_dir: Path) -> RunConfig:
    """Make a relative dataset path absolute, so the saved config works from the run folder."""
    path = config.dataset.path
    if path is None or Path(path).is_absolute() or config.dataset.hub_name is not None:
        return config
    dataset = config.dataset.model_copy(update={"path": str((base_dir / path).resolve())})
    return config.model_copy(update={"dataset": dataset})


def open_run(config: RunConfig, runs_dir: Path) -> RunFolder:
    run = RunFolder(runs_dir / config.name)
    run.root.mkdir(parents=True, exist_ok=True)
    run.save_config(config)
    return run


def _split_paths(run: RunFolder) -> dict[str, Path]:
    return {name: run.data_dir / f"{name}.jsonl" for name in ("train", "test", "dev")}


def split_is_pinned(run: RunFolder, config: RunConfig) -> bool:
    """Whether data/ holds the split of this config's task and dataset."""
    marker = run.data_dir / "fingerprint"
    return (
        marker.exists()
        and marker.read_text() == config.section_hash("task", "dataset")
        and _split_paths(run)["test"].exists()
    )


def load_split(config: RunConfig) -> Split:
    """Load, validate and split the dataset; writes nothing."""
    return split_examples(load_examples(config.dataset, build_task(config.task)), config.dataset)


def pin_split(run: RunFolder, config: RunConfig, split: Split) -> None:
    paths = _split_paths(run)
    for name, part in (("train", split.train), ("test", split.test), ("dev", split.dev)):
        if part or name != "dev":
            write_jsonl(paths[name], [e.to_json() for e in part])
        else:
            paths[name].unlink(missing_ok=True)
    atomic_write_text(run.data_dir / "fingerprint", config.section_hash("task", "dataset"))


def prepare_split(run: RunFolder, config: RunConfig) -> Split:
    """Load and split the dataset once; data/{train,test,dev}.jsonl pin the split."""
    if split_is_pinned(run, config):
        parts = {
            name: [Example.from_json(r) for r in read_jsonl(path)] if path.exists() else []
            for name, path in _split_paths(run).items()
        }
        return Split(parts["train"], parts["test"], parts["dev"])
    split = load_split(config)
    pin_split(run, config, split)
    return split


def _model_configs(node: BaseModel, where: str) -> Iterator[tuple[str, ModelConfig]]:
    """Every model a config describes, with its dotted key (teacher.model, students.0.base)."""
    if isinstance(node, ModelConfig):
        yield where, node
        return
    for name in type(node).model_fields:
        value = getattr(node, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            key = f"{where}{name}" if index is None else f"{where}{name}.{index}"
            if isinstance(item, BaseModel):
                yield from _model_configs(item, f"{key}.")


def missing_api_keys(config: RunConfig) -> list[str]:
    """One message per API-key variable the config names that is not set."""
    return [
        f"{where.rstrip('.')}.api_key_env: the environment variable {model.api_key_env} is not "
        "set; export it before the run (the key itself never goes into the config)"
        for where, model in _model_configs(config, "")
        if model.backend == "openai" and model.api_key_env and not os.environ.get(model.api_key_env)
    ]


def check_api_keys(config: RunConfig) -> None:
    """Every API-key variable the config names is set (keys are read only from there)."""
    missing = missing_api_keys(config)
    if missing:
        raise MissingKeyError(missing[0])


def _hash(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def fingerprint(run: RunFolder, config: RunConfig, stage: str) -> str:
    """What a stage's output depends on: its config sections and when its input was made."""

    def upstream(name: str) -> str:
        record = run.stage_record(name) or {}
        return f"{record.get('fingerprint')}@{record.get('finished_at')}"

    if stage == "synth":
        return config.section_hash("task", "dataset", "teacher", "synth")
    if stage == "train":
        return _hash(config.section_hash("students"), upstream("synth"))
    if stage == "evaluate":
        return _hash(config.section_hash("teacher", "evaluate", "judge"), upstream("train"))
    return _hash(upstream("evaluate"))


def _do_synth(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.synth.stage import run_synth

    split = prepare_split(run, config)
    return run_synth(run, config, build_task(config.task), split.train, split.test)


def _do_train(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.train.stage import train_students

    return train_students(run, config, build_task(config.task))


def _do_evaluate(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.evaluate.stage import run_evaluate

    split = prepare_split(run, config)
    scores = run_evaluate(run, config, build_task(config.task), split.test)
    console.print(evaluate_table(scores))
    headline = scores["headline"]
    return {
        name: c["metrics"].get(headline, {}).get("value")
        for name, c in scores["candidates"].items()
    }


def _do_report(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.report.stage import run_report

    return {"report": str(run_report(run, config))}


STAGE_FUNCS: dict[str, Callable[[RunFolder, RunConfig], dict[str, Any]]] = {
    "synth": _do_synth,
    "train": _do_train,
    "evaluate": _do_evaluate,
    "report": _do_report,
}


def run_stage(run: RunFolder, config: RunConfig, stage: str) -> dict[str, Any]:
    """Run one stage now, and record it in the manifest."""
    previous = STAGES[STAGES.index(stage) - 1] if stage != "synth" else None
    if previous and not (run.stage_record(previous) or {}).get("status") == "done":
        raise StageOrderError(
            f"stage {stage} needs {previous} first: potstill {previous} {run.root}"
        )
    if world_size() > 1 and stage != "train":
        raise RuntimeError(
            f"stage {stage} runs in one process; only `potstill train` runs under accelerate launch"
        )
    fp = fingerprint(run, config, stage)
    console.rule(f"[bold]{stage}")
    try:
        with timed() as elapsed:
            result = STAGE_FUNCS[stage](run, config)
    except StageIncomplete as exc:
        if is_main_process():
            run.mark_incomplete(stage, fp, elapsed[0], result=exc.result, **_cost(exc.result))
        raise
    if is_main_process():
        run.mark_done(stage, fp, elapsed[0], result=result, **_cost(result))
        say(f"{stage}: done in {duration(elapsed[0])}.")
    return result


def _cost(result: dict[str, Any]) -> dict[str, Any]:
    """A stage's spending, lifted to the top of its manifest record."""
    return {"cost_usd": result["cost_usd"]} if "cost_usd" in result else {}


def estimate_synth(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    """What the synth stage would send and cost, without calling the teacher."""
    from potstill.synth.estimate import estimate

    split = prepare_split(run, config)
    return estimate(run, config, build_task(config.task), split.train, split.test)


def stale_stages(run: RunFolder, config: RunConfig) -> list[str]:
    """The stages a run would run now: the first missing or stale one and all after it."""
    for index, stage in enumerate(STAGES):
        if not run.is_current(stage, fingerprint(run, config, stage)):
            return list(STAGES[index:])
    return []


def run_pipeline(config: RunConfig, runs_dir: Path, stop_after: str | None = None) -> RunFolder:
    """Run every stage that is missing or stale; finished, current stages are skipped.
    With `stop_after`, no stage after that one runs (e.g. synth here, train on a GPU cluster).

    Bad input (a dataset row, a template, an unset API-key variable) is found before anything
    is written, so it leaves no run folder behind and never changes an existing one.
    """
    run = RunFolder(runs_dir / config.name)
    split = None if split_is_pinned(run, config) else load_split(config)
    stale = stale_stages(run, config)
    if stop_after is not None:  # stages after stop_after do not run, so need no keys
        stale = [s for s in stale if STAGES.index(s) <= STAGES.index(stop_after)]
    if {"synth", "evaluate"} & set(stale):  # the stages that call models
        check_api_keys(config)
    run = open_run(config, runs_dir)
    if split is not None:
        pin_split(run, config, split)
    for stage in STAGES:
        if run.is_current(stage, fingerprint(run, config, stage)):
            console.print(f"{stage}: up to date, skipped")
        else:
            run_stage(run, config, stage)
        if stage == stop_after:
            console.print(f"stopped after {stage}: {run.root}", markup=False, highlight=False)
            return run
    report = f"report: {run.root / 'report.md'} and {run.root / 'report.html'}"
    console.print(report, markup=False, highlight=False)  # a path is not markup
    return run
