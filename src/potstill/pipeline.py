"""One run, five stages: each reads the previous stage's files and can be re-run alone."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from potstill.config import RunConfig
from potstill.data.loading import Split, load_examples, split_examples
from potstill.progress import console
from potstill.runs import (
    STAGES,
    RunFolder,
    StageIncomplete,
    atomic_write_text,
    read_jsonl,
    timed,
    write_jsonl,
)
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


def prepare_split(run: RunFolder, config: RunConfig) -> Split:
    """Load and split the dataset once; data/{train,test,dev}.jsonl pin the split."""
    fingerprint = config.section_hash("task", "dataset")
    marker = run.data_dir / "fingerprint"
    paths = {name: run.data_dir / f"{name}.jsonl" for name in ("train", "test", "dev")}
    if marker.exists() and marker.read_text() == fingerprint and paths["test"].exists():
        parts = {
            name: [Example.from_json(r) for r in read_jsonl(path)] if path.exists() else []
            for name, path in paths.items()
        }
        return Split(parts["train"], parts["test"], parts["dev"])
    split = split_examples(load_examples(config.dataset, build_task(config.task)), config.dataset)
    for name, part in (("train", split.train), ("test", split.test), ("dev", split.dev)):
        if part or name != "dev":
            write_jsonl(paths[name], [e.to_json() for e in part])
        else:
            paths[name].unlink(missing_ok=True)
    atomic_write_text(marker, fingerprint)
    return split


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
    from potstill.train.stage import train_student

    return {s.name: train_student(run, s) for s in config.students}


def _do_evaluate(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.evaluate.stage import run_evaluate

    split = prepare_split(run, config)
    scores = run_evaluate(run, config, build_task(config.task), split.test)
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
        raise RuntimeError(f"stage {stage} needs {previous} first: potstill {previous} {run.root}")
    fp = fingerprint(run, config, stage)
    console.rule(f"[bold]{stage}")
    try:
        with timed() as elapsed:
            result = STAGE_FUNCS[stage](run, config)
    except StageIncomplete as exc:
        run.mark_incomplete(stage, fp, elapsed[0], result=exc.result, **_cost(exc.result))
        raise
    run.mark_done(stage, fp, elapsed[0], result=result, **_cost(result))
    return result


def _cost(result: dict[str, Any]) -> dict[str, Any]:
    """A stage's spending, lifted to the top of its manifest record."""
    return {"cost_usd": result["cost_usd"]} if "cost_usd" in result else {}


def estimate_synth(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    """What the synth stage would send and cost, without calling the teacher."""
    from potstill.synth.estimate import estimate

    split = prepare_split(run, config)
    return estimate(run, config, build_task(config.task), split.train, split.test)


def run_pipeline(config: RunConfig, runs_dir: Path) -> RunFolder:
    """Run every stage that is missing or stale; finished, current stages are skipped."""
    run = open_run(config, runs_dir)
    for stage in STAGES:
        if run.is_current(stage, fingerprint(run, config, stage)):
            console.print(f"{stage}: up to date, skipped")
            continue
        run_stage(run, config, stage)
    console.print(f"report: {run.root / 'report.md'} and {run.root / 'report.html'}")
    return run
