"""`potstill check CONFIG`: what a run does before its first model call, and nothing more.

Every problem is collected, not only the first: the config (every key pydantic refuses), the
task (templates, synonyms), the dataset and its split, the worked examples, and the API-key
variables. A config with bad keys is checked further with those keys at their defaults, so a
typo in `judge` does not hide a missing column. Then it shows what the run would do. It writes
nothing: the budget estimate reads the run's call store only where one exists.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from potstill.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    parse_config,
    placeholder_keys,
    read_config_tree,
)
from potstill.data.loading import DatasetError, Split
from potstill.pipeline import (
    absolutize,
    check_sources_unchanged,
    load_split,
    load_transfer,
    missing_api_keys,
    prompts_used,
    split_is_pinned,
    template_problems,
    transfer_is_pinned,
    worked_example_overlaps,
)
from potstill.progress import console, say
from potstill.runs import RunFolder
from potstill.tasks import Example, Task, build_task
from potstill.tasks.base import shot_answer_problem, task_user_text
from potstill.train.tracking import tracker_problems


@dataclass
class Checked:
    """What `check` found: every problem, and what the run would use."""

    problems: list[str] = field(default_factory=list)
    config: RunConfig | None = None
    task: Task | None = None
    split: Split | None = None
    transfer: dict[str, list[Example]] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None


def _drop(tree: Any, loc: tuple[Any, ...], unknown: bool = False) -> bool:
    """Delete the deepest key of `loc` that the tree has (below the top level, unless the key
    is `unknown`: a section the config does not have can go)."""
    node: Any = tree
    parents: list[tuple[Any, Any]] = []
    for part in loc:
        key = int(part) if isinstance(node, list) and str(part).isdigit() else part
        if isinstance(node, dict):
            has = key in node
        else:
            has = isinstance(node, list) and isinstance(key, int) and key < len(node)
        if not has:
            break
        parents.append((node, key))
        node = node[key]
    if len(parents) < (1 if unknown else 2):  # a known section cannot fall back to a default
        return False
    container, key = parents[-1]
    del container[key]
    return True


def _salvage(tree: Any, overrides: list[str] | None) -> tuple[RunConfig | None, set[str]]:
    """The config with each refused key at its default, and the sections that lost a key
    which the later checks need. An unknown key (a typo) is dropped but does not count: the
    run would refuse it, and without it the section means what it says, so the dataset or task
    checks still run and a typo does not hide a missing column."""
    tree = copy.deepcopy(tree)
    apply_overrides(tree, overrides)
    dropped = {key.split(".")[0] for key in placeholder_keys(tree)}
    for key in placeholder_keys(tree):
        _drop(tree, tuple(key.split(".")))
    for _ in range(20):
        try:
            return RunConfig.model_validate(tree), dropped
        except ValidationError as err:
            errors = err.errors()
            drops = [_drop(tree, e["loc"], e["type"] == "extra_forbidden") for e in errors]
            if not any(drops):
                return None, dropped
            dropped |= {str(e["loc"][0]) for e in errors if e["type"] != "extra_forbidden"}
    return None, dropped


def _one_per_key(message: str, path: Path) -> list[str]:
    """A config error lists its keys on indented lines: one problem each, naming the file."""
    first, *keys = message.split("\n")
    if not keys:
        return [first]
    return [f"{path}: {line.strip()}" for line in keys]


def _shot_problems(task: Task, config: RunConfig) -> list[str]:
    found = []
    for where, prompt in prompts_used(config):
        for index, shot in enumerate(prompt.shots):
            key = f"{where}.shots.{index}"
            try:
                task_user_text(task, shot.inputs, prompt.style)
            except KeyError as exc:
                found.append(
                    f"{key}.inputs: {exc.args[0]}; the task's inputs are {list(task.input_fields)}"
                )
                continue
            except ConfigError as exc:
                found.append(f"{key}: {exc}")
                continue
            why = shot_answer_problem(task, shot, prompt.style)
            if why:
                found.append(f"{key}.answer: {why}")
    return found


def _estimate(
    config: RunConfig,
    task: Task,
    split: Split,
    transfer: dict[str, list[Example]],
    runs_dir: Path,
) -> dict[str, Any]:
    from potstill.synth.estimate import estimate

    # Answers already stored count as paid; a run without a call store gets none made.
    run = RunFolder(runs_dir / config.name)
    return estimate(run, config, task, split.train, split.test, transfer)


def check_config(path: Path, overrides: list[str] | None, runs_dir: Path) -> Checked:
    """Every problem a run of `path` would meet before its first model call."""
    found = Checked()
    try:
        tree = read_config_tree(path)
        found.config = parse_config(copy.deepcopy(tree), str(path), overrides)
        dropped: set[str] = set()
    except ConfigError as exc:
        found.problems += _one_per_key(str(exc), path)
        if "tree" not in locals() or not isinstance(tree, dict):
            return found
        try:
            found.config, dropped = _salvage(tree, overrides)
        except ConfigError:
            return found  # a malformed override: already reported
    if found.config is None:
        return found
    config = absolutize(found.config, path.parent)
    found.config = config
    found.problems += [f"{path}: {m}" for m in missing_api_keys(config)]
    found.problems += [f"{path}: {m}" for m in tracker_problems(config)]
    if "task" in dropped:
        return found
    try:
        found.task = build_task(config.task)
    except ConfigError as exc:
        found.problems.append(f"{path}: {exc}")
        return found
    found.problems += [f"{path}: {m}" for m in _shot_problems(found.task, config)]
    if "dataset" in dropped:
        return found
    try:
        found.split = load_split(config)
        found.transfer = load_transfer(config)
    except DatasetError as exc:
        found.problems.append(str(exc))
        return found
    run = RunFolder(runs_dir / config.name)
    try:  # a run of this config that pinned its data: has a source changed since?
        pinned = split_is_pinned(run, config), transfer_is_pinned(run, config)
        check_sources_unchanged(run, config, *pinned)
    except DatasetError as exc:
        found.problems.append(str(exc))
    found.problems += [
        f"{path}: a worked example repeats an evaluation example: {m}"
        for m in worked_example_overlaps(config, found.split.test, found.transfer)
    ]
    found.problems += [f"{path}: {m}" for m in template_problems(config, found.split)]
    if found.problems:
        return found
    found.estimate = _estimate(config, found.task, found.split, found.transfer, runs_dir)
    return found


def _distribution(split: Split) -> Table | None:
    parts = {"train": split.train, "test": split.test, "dev": split.dev}
    counts = {
        n: Counter(e.reference for e in p if e.reference is not None) for n, p in parts.items()
    }
    labels = sorted(set().union(*counts.values()), key=lambda label: -counts["train"][label])
    if not labels or len(labels) > 30:  # open text: no distribution to show
        return None
    table = Table(title="references per split", title_justify="left")
    table.add_column("reference")
    for name in parts:
        table.add_column(name, justify="right")
    for label in labels:
        table.add_row(label, *(str(counts[n][label]) for n in parts))
    return table


def show_plan(found: Checked) -> None:
    """What the run would do: splits, labels, one rendered prompt per style, the students."""
    config, task, split = found.config, found.task, found.split
    assert config is not None and task is not None and split is not None
    say(
        f"split: {len(split.train)} train, {len(split.test)} test, {len(split.dev)} dev "
        f"(seed {config.dataset.seed})"
    )
    if found.transfer:
        sets = ", ".join(f"{name} ({len(e)})" for name, e in found.transfer.items())
        say(f"transfer sets, scored like the test split: {sets}")
    table = _distribution(split)
    if table is not None:
        console.print(table)
    example = split.train[0]
    for where, prompt in prompts_used(config):
        say(f"\n--- {where}: style {prompt.style}, {len(prompt.shots)} worked example(s)")
        for message in task.messages(example.inputs, prompt):
            say(f"[{message['role']}] {message['content']}")
    say("")
    students = Table(title="students", title_justify="left")
    for column in ("name", "base", "method", "epochs", "data"):
        students.add_column(column)
    for student in config.students:
        data = student.data
        variant = (
            f"synth/train.jsonl (synth.target {config.synth.target})"
            if data is None
            else f"{data.source}, target {data.target or config.synth.target}"
        )
        train = student.train
        students.add_row(
            student.name, student.base.model, train.method, f"{train.epochs:g}", variant
        )
    console.print(students)
    if found.estimate is not None:
        from potstill.synth.estimate import print_estimate

        print_estimate(found.estimate)


def run_check(path: Path, overrides: list[str] | None, runs_dir: Path) -> int:
    """Check, print every problem or the plan; the exit code (2 when any problem)."""
    found = check_config(path, overrides, runs_dir)
    if found.problems:
        say(f"{len(found.problems)} problem(s) found in {path}:")
        for problem in found.problems:
            say(f"error: {problem}")
        return 2
    show_plan(found)
    say(f"\n{path}: no problems found; `potstill run {path}` would do the above.")
    return 0
