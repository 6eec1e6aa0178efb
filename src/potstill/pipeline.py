"""One run, five stages: each reads the previous stage's files and can be re-run alone."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from potstill.config import ConfigError, ModelConfig, PromptConfig, RunConfig
from potstill.data.loading import DatasetError, Split, read_examples
from potstill.data.sets import load_split as load_dataset_split
from potstill.data.sets import load_transfer as load_transfer_sets
from potstill.data.sets import source_dataset, source_digests
from potstill.errors import StageIncomplete
from potstill.files import atomic_write_text, write_jsonl
from potstill.models.openai_backend import MissingKeyError
from potstill.models.packaged import release_memory
from potstill.progress import console, duration
from potstill.runs import STAGES, RunFolder, StageOrderError, is_main_process, timed, world_size
from potstill.summaries import evaluate_table, judge_line, say
from potstill.synth.filters import shot_overlaps
from potstill.tasks import Example, build_task


def _absolute(path: str | None, base_dir: Path) -> str | None:
    if path is None or path.startswith("hf:") or Path(path).is_absolute():
        return path
    return str((base_dir / path).resolve())


def absolutize(config: RunConfig, base_dir: Path) -> RunConfig:
    """Make relative dataset paths (the main source, the test and dev sets, the transfer
    sets) absolute, so the saved config works from the run folder."""
    dataset = config.dataset
    update: dict[str, Any] = {}
    if dataset.hub_name is None:
        update["path"] = _absolute(dataset.path, base_dir)
    for part in ("test", "dev"):
        source = getattr(dataset, part)
        if source is not None:
            update[part] = source.model_copy(update={"path": _absolute(source.path, base_dir)})
    transfer = [
        t.model_copy(update={"path": _absolute(t.path, base_dir)}) for t in config.evaluate.transfer
    ]
    return config.model_copy(
        update={
            "dataset": dataset.model_copy(update=update),
            "evaluate": config.evaluate.model_copy(update={"transfer": transfer}),
        }
    )


def open_run(config: RunConfig, runs_dir: Path) -> RunFolder:
    run = RunFolder(runs_dir / config.name)
    run.root.mkdir(parents=True, exist_ok=True)
    run.save_config(config)
    return run


def _record_sources(run: RunFolder, config: RunConfig, pinned: bool) -> None:
    """Keep in the manifest what each local source held when its rows were pinned (and,
    for a new split, when), so a later run sees a source that changed since."""
    data = dict(run.manifest().data or {})
    if pinned:  # a new id each time, even for two pins within one second
        data["pin"] = uuid.uuid4().hex
        data["pinned_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["sources"] = source_digests(config)
    run.set_data(data)


def check_sources_unchanged(
    run: RunFolder, config: RunConfig, split: bool = True, transfer: bool = True
) -> None:
    """A pinned source (the split's with `split`, the transfer sets' with `transfer`) whose
    file now holds other bytes than when it was pinned is an error naming it: the run would
    otherwise go on with the old rows without a word."""
    recorded = (run.manifest().data or {}).get("sources") or {}
    if not recorded:
        return  # pinned before potstill recorded its sources
    for key, now in source_digests(config).items():
        was = recorded.get(key)
        pinned = transfer if key.startswith("evaluate.transfer") else split
        if not pinned or not was or was.get("path") != now["path"]:
            continue
        if was.get("sha256") != now["sha256"]:
            what = "the set was pinned" if key.startswith("evaluate.") else "the split was pinned"
            raise DatasetError(
                f"{key}: {now['path']} changed since {what} in {run.data_dir} (every stage "
                "was made from the rows read then); start a new run (another `name`), or run "
                "`potstill run CONFIG --refresh` to pin it anew and run every stage again"
            )


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
    """Load, validate and split the dataset (with its own test / dev sources); writes nothing."""
    return load_dataset_split(config.dataset, build_task(config.task))


def pin_split(run: RunFolder, config: RunConfig, split: Split) -> None:
    paths = _split_paths(run)
    for name, part in (("train", split.train), ("test", split.test), ("dev", split.dev)):
        if part or name != "dev":
            write_jsonl(paths[name], [e.to_json() for e in part])
        else:
            paths[name].unlink(missing_ok=True)
    atomic_write_text(run.data_dir / "fingerprint", config.section_hash("task", "dataset"))
    _record_sources(run, config, pinned=True)


def _read_split(run: RunFolder) -> Split:
    parts = {
        name: read_examples(path) if path.exists() else []
        for name, path in _split_paths(run).items()
    }
    return Split(parts["train"], parts["test"], parts["dev"])


def prepare_split(run: RunFolder, config: RunConfig, pin: bool = True) -> Split:
    """Load and split the dataset once; data/{train,test,dev}.jsonl pin the split (unless
    `pin` is false: then a split not pinned yet is loaded and not written)."""
    if split_is_pinned(run, config):
        check_sources_unchanged(run, config, transfer=False)
        return _read_split(run)
    split = load_split(config)
    if pin:
        pin_split(run, config, split)
    return split


def transfer_fingerprint(config: RunConfig) -> str:
    """What the pinned transfer sets depend on: the task and each set's source as read (its
    own mapping or the main one), its sample size and the seed that draws it."""
    sets = [
        (t.name, source_dataset(t, config.dataset).model_dump(mode="json"), t.size)
        for t in config.evaluate.transfer
    ]
    return _hash(config.section_hash("task"), config.dataset.seed, sets)


def _transfer_dir(run: RunFolder) -> Path:
    return run.data_dir / "transfer"


def transfer_is_pinned(run: RunFolder, config: RunConfig) -> bool:
    """Whether data/transfer/ holds this config's transfer sets (and no other set)."""
    folder = _transfer_dir(run)
    if not config.evaluate.transfer:
        return not any(folder.glob("*.jsonl"))
    marker = folder / "fingerprint"
    return (
        marker.exists()
        and marker.read_text() == transfer_fingerprint(config)
        and all((_transfer_dir(run) / f"{t.name}.jsonl").exists() for t in config.evaluate.transfer)
    )


def load_transfer(config: RunConfig) -> dict[str, list[Example]]:
    """Load and validate every transfer set; writes nothing."""
    return load_transfer_sets(config, build_task(config.task))


def pin_transfer(run: RunFolder, config: RunConfig, sets: dict[str, list[Example]]) -> None:
    """data/transfer/<name>.jsonl per set; files of sets no longer configured are removed."""
    folder = _transfer_dir(run)
    for path in folder.glob("*.jsonl") if folder.exists() else []:
        if path.stem not in sets:
            path.unlink()
    if not sets:
        (folder / "fingerprint").unlink(missing_ok=True)
        if folder.exists():
            folder.rmdir()
        return
    for name, examples in sets.items():
        write_jsonl(folder / f"{name}.jsonl", [e.to_json() for e in examples])
    atomic_write_text(folder / "fingerprint", transfer_fingerprint(config))
    _record_sources(run, config, pinned=False)


def _read_transfer(run: RunFolder, config: RunConfig) -> dict[str, list[Example]]:
    folder = _transfer_dir(run)
    return {t.name: read_examples(folder / f"{t.name}.jsonl") for t in config.evaluate.transfer}


def prepare_transfer(
    run: RunFolder, config: RunConfig, pin: bool = True
) -> dict[str, list[Example]]:
    """Load the transfer sets once; data/transfer/<name>.jsonl pin them, as the split is."""
    if transfer_is_pinned(run, config):
        check_sources_unchanged(run, config, split=False)
        return _read_transfer(run, config)
    sets = load_transfer(config)
    if pin:
        pin_transfer(run, config, sets)
    return sets


def evaluation_sets(
    run: RunFolder, config: RunConfig, pin: bool = True
) -> tuple[Split, dict[str, list[Example]]]:
    """The pinned split and transfer sets (loaded and pinned on first use, unless `pin` is
    false), with the worked examples checked against every evaluation set."""
    split, transfer = prepare_split(run, config, pin), prepare_transfer(run, config, pin)
    check_worked_examples(config, split.test, transfer)
    return split, transfer


def worked_examples(config: RunConfig) -> list[tuple[str, dict[str, str]]]:
    """Every worked example a model is shown, with its config key: the teacher's, the
    students' (synth.prompt) and those of extra candidates."""
    prompts = [("teacher.prompt", config.teacher.prompt), ("synth.prompt", config.synth.prompt)]
    prompts += [
        (f"evaluate.candidates.{i}.prompt", c.prompt)
        for i, c in enumerate(config.evaluate.candidates)
        if c.prompt is not None
    ]
    return [
        (f"{where}.shots.{i}", shot.inputs)
        for where, prompt in prompts
        for i, shot in enumerate(prompt.shots)
    ]


def worked_example_overlaps(
    config: RunConfig, test: list[Example], transfer: dict[str, list[Example]]
) -> list[str]:
    """One message per worked example that repeats (or nearly) an evaluation example."""
    shots = worked_examples(config)
    if not shots:
        return []
    sets = {"test": test, **{f"transfer set {name!r}": e for name, e in transfer.items()}}
    return shot_overlaps(build_task(config.task), config.synth, shots, sets)


def check_worked_examples(
    config: RunConfig, test: list[Example], transfer: dict[str, list[Example]]
) -> None:
    """A worked example that is (nearly) an example a model is scored on would hand it the
    answer: an error naming the shot and the evaluation example."""
    found = worked_example_overlaps(config, test, transfer)
    if found:
        raise ConfigError(
            "worked examples repeat evaluation examples, so the scores would reward copying "
            "the shown answer: "
            + "; ".join(found)
            + ". Change those worked examples, or drop the examples from the evaluation data."
        )


def prompts_used(config: RunConfig) -> Iterator[tuple[str, PromptConfig]]:
    """Every prompt the run asks with, by its key."""
    yield "teacher.prompt", config.teacher.prompt
    if config.evaluate.teacher_zero_shot:
        yield "teacher (zero-shot)", PromptConfig(max_tokens=config.teacher.prompt.max_tokens)
    yield "synth.prompt", config.synth.prompt
    for index, extra in enumerate(config.evaluate.candidates):
        if extra.prompt is not None:
            yield f"evaluate.candidates.{index}.prompt", extra.prompt


# How many of the first training and test rows every template is rendered for at load.
TEMPLATE_CHECK_ROWS = 3


def template_problems(config: RunConfig, split: Split) -> list[str]:
    """One message per template that fails to render (an error, or past the sandbox's
    bounds) for the first rows of the split, in every prompt the run uses; the message
    names the template's key."""
    task = build_task(config.task)
    rows = split.train[:TEMPLATE_CHECK_ROWS] + split.test[:TEMPLATE_CHECK_ROWS]
    found: dict[str, str] = {}  # one message per distinct error, however many prompts share it
    for where, prompt in prompts_used(config):
        for example in rows:
            try:
                task.messages(example.inputs, prompt)
            except ConfigError as exc:
                found.setdefault(str(exc), f"{exc} (rendering {where} for example {example.id!r})")
                break
    return list(found.values())


def check_templates(config: RunConfig, split: Split) -> None:
    """Every template renders for the first rows, or a ConfigError naming its key."""
    found = template_problems(config, split)
    if found:
        raise ConfigError("; ".join(found))


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
        record = run.stage_record(name)
        return f"{record.fingerprint}@{record.finished_at}" if record else "None@None"

    if stage == "synth":
        synth = config.section_hash("task", "dataset", "teacher", "synth")
        # A split pinned anew (`potstill run --refresh`) makes every stage stale; runs that
        # pinned theirs before this was recorded keep their fingerprints.
        pin = (run.manifest().data or {}).get("pin")
        if pin is not None:
            synth = _hash(synth, pin)
        # Training inputs are screened against the transfer sets too.
        return _hash(synth, transfer_fingerprint(config)) if config.evaluate.transfer else synth
    if stage == "train":
        return _hash(config.section_hash("students"), upstream("synth"))
    if stage == "evaluate":
        # `checks`: the guard rails' thresholds decide warnings and whether the judge counts.
        sections = config.section_hash("teacher", "evaluate", "judge", "checks")
        return _hash(sections, upstream("train"))
    return _hash(upstream("evaluate"))


def _do_synth(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.synth.stage import run_synth

    split, transfer = evaluation_sets(run, config)
    return run_synth(run, config, build_task(config.task), split.train, split.test, transfer)


def _do_train(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.train.stage import train_students
    from potstill.train.tracking import check_trackers

    check_trackers(config)  # a tracker that is not installed stops here, not mid-run

    return train_students(run, config, build_task(config.task))


def _do_evaluate(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    from potstill.evaluate.stage import run_evaluate

    split, transfer = evaluation_sets(run, config)
    scores = run_evaluate(run, config, build_task(config.task), split.test, transfer)
    console.print(evaluate_table(scores))
    shared = {"headline": scores["headline"], "order": scores["order"]}
    for source in config.evaluate.transfer:  # each set's table too, in config order
        console.print(evaluate_table({**scores["transfer"][source.name], **shared}, on=source.name))
    if line := judge_line(scores):
        say(line)
    from potstill.train.tracking import log_evaluation

    log_evaluation(run, config, scores)  # to the students' tracker runs, if they name any
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
    run.manifest()  # a damaged manifest stops the stage before it writes anything
    previous = STAGES[STAGES.index(stage) - 1] if stage != "synth" else None
    if previous and not run.is_done(previous):
        raise StageOrderError(
            f"stage {stage} needs {previous} first: potstill {previous} {run.root}"
        )
    if world_size() > 1 and stage != "train":
        raise RuntimeError(
            f"stage {stage} runs in one process; only `potstill train` runs under accelerate launch"
        )
    with run.writing():
        return _run_stage(run, config, stage)


def _run_stage(run: RunFolder, config: RunConfig, stage: str) -> dict[str, Any]:
    fp = fingerprint(run, config, stage)
    console.rule(f"[bold]{stage}")
    try:
        with timed() as elapsed:
            try:
                result = STAGE_FUNCS[stage](run, config)
            finally:
                release_memory()  # the stage's models, before the next stage loads its own
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
    """What the synth stage would send and cost, without calling the teacher; it writes
    nothing (so it takes no write lock, and works while a run writes the folder)."""
    from potstill.synth.estimate import estimate

    split, transfer = evaluation_sets(run, config, pin=False)
    return estimate(run, config, build_task(config.task), split.train, split.test, transfer)


def stale_stages(run: RunFolder, config: RunConfig) -> list[str]:
    """The stages a run would run now: the first missing or stale one and all after it."""
    for index, stage in enumerate(STAGES):
        if not run.is_current(stage, fingerprint(run, config, stage)):
            return list(STAGES[index:])
    return []


def run_pipeline(
    config: RunConfig, runs_dir: Path, stop_after: str | None = None, refresh: bool = False
) -> RunFolder:
    """Run every stage that is missing or stale; finished, current stages are skipped.
    With `stop_after`, no stage after that one runs (e.g. synth here, train on a GPU cluster).
    With `refresh`, the split and transfer sets are loaded and pinned anew, and every stage
    runs again.

    The run folder's write lock is held throughout (`RunFolder.writing`). Bad input (a
    dataset row, a template that fails to render for the first rows, an unset API-key
    variable, a source changed since it was pinned) is found before anything is written, so
    it leaves no run folder behind and never changes an existing one.
    """
    run = RunFolder(runs_dir / config.name)
    with run.writing():
        return _run_pipeline(run, config, stop_after, refresh)


def _run_pipeline(
    run: RunFolder, config: RunConfig, stop_after: str | None, refresh: bool
) -> RunFolder:
    split_pinned = not refresh and split_is_pinned(run, config)
    transfer_pinned = not refresh and transfer_is_pinned(run, config)
    check_sources_unchanged(run, config, split_pinned, transfer_pinned)
    split = None if split_pinned else load_split(config)
    transfer = None if transfer_pinned else load_transfer(config)
    examples = split or _read_split(run)
    check_worked_examples(
        config,
        examples.test,
        transfer if transfer is not None else _read_transfer(run, config),
    )
    check_templates(config, examples)
    stale = list(STAGES) if refresh else stale_stages(run, config)
    if stop_after is not None:  # stages after stop_after do not run, so need no keys
        stale = [s for s in stale if STAGES.index(s) <= STAGES.index(stop_after)]
    if {"synth", "evaluate"} & set(stale):  # the stages that call models
        check_api_keys(config)
    if "train" in stale:
        from potstill.train.tracking import check_trackers

        check_trackers(config)
    run = open_run(config, run.root.parent)
    if split is not None:
        pin_split(run, config, split)
    if transfer is not None:
        pin_transfer(run, config, transfer)
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
