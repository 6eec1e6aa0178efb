"""Experiment trackers (`train.report_to`): TRL logs the training curves, potstill adds the
student's evaluation metrics with their intervals to the same tracker run.

Nothing is logged anywhere unless a student names a tracker. A tracker that is not installed
is a config error before training (`tracker_problems`, also in `potstill check`). Training
records which tracker run it logged to in students/<name>/trackers.json; the evaluate stage
reads it and logs each metric, its interval and n to that run at the training's last step:
the same TensorBoard folder, the same MLflow run id, the same W&B run id (resumed), the same
trackio project and run name.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from potstill.config import ConfigError, RunConfig, StudentConfig
from potstill.files import read_json, write_json
from potstill.progress import say
from potstill.records import TrainSummary, read_record
from potstill.runs import RunFolder

# Per tracker: the modules of which one must import (transformers' own test), and the install.
INSTALL: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboardX"),
    "trackio": (("trackio",), "pip install trackio"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "wandb": (("wandb",), "pip install wandb"),
}
TRACKERS_FILE = "trackers.json"
TENSORBOARD_DIR = "tensorboard"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tracker_problems(config: RunConfig) -> list[str]:
    """One message per tracker a student names that cannot be imported here."""
    problems = []
    for index, student in enumerate(config.students):
        for tracker in student.train.report_to:
            modules, install = INSTALL[tracker]
            if not any(_installed(m) for m in modules):
                problems.append(
                    f"students.{index}.train.report_to: {tracker} is not installed here "
                    f"({install}), or take it out of report_to"
                )
    return problems


def check_trackers(config: RunConfig) -> None:
    """Every tracker the students name is installed (checked before training starts)."""
    problems = tracker_problems(config)
    if problems:
        raise ConfigError(problems[0])


def run_name(folder: Path) -> str:
    """A student's tracker run name: `<run>/<student>` (folder is runs/<run>/students/<name>)."""
    return f"{folder.parent.parent.name}/{folder.name}"


def sft_arguments(student: StudentConfig, folder: Path | None) -> dict[str, Any]:
    """The SFTConfig arguments for the student's trackers: none unless it names some."""
    trackers = list(student.train.report_to)
    if not trackers or folder is None:
        return {"report_to": "none"}
    name = run_name(folder)
    return {"report_to": trackers, "run_name": name, "project": folder.parent.parent.name}


def attach(trainer: Any, folder: Path, student: StudentConfig) -> None:
    """Point TensorBoard at students/<name>/tensorboard (checkpoints/ is removed after
    training) and record, when training starts, which tracker runs it logs to."""
    if not student.train.report_to:
        return
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_callback import TrainerCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(folder / TENSORBOARD_DIR)
            # Each writer an event file of its own: the callback opens a new writer for the
            # evaluation after training, and a file name (time in seconds, host) can repeat.
            callback._SummaryWriter = _own_file(callback._SummaryWriter)
    trackers: list[str] = list(student.train.report_to)

    class RecordTrackerRuns(TrainerCallback):  # type: ignore[misc]
        # Added after the trackers' own callbacks, so their runs exist by now.
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                write_json(folder / TRACKERS_FILE, _tracker_runs(trackers, folder, args))

    trainer.add_callback(RecordTrackerRuns())


def _own_file(writer: Any) -> Callable[..., Any]:
    count = itertools.count()
    return lambda **kwargs: writer(filename_suffix=f".{os.getpid()}.{next(count)}", **kwargs)


def _tracker_runs(trackers: list[str], folder: Path, args: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for tracker in trackers:
        if tracker == "tensorboard":
            found[tracker] = {"logging_dir": str(folder / TENSORBOARD_DIR)}
        elif tracker == "trackio":
            found[tracker] = {"project": args.project, "name": args.run_name}
        elif tracker == "mlflow":
            import mlflow

            active = mlflow.active_run()
            found[tracker] = {
                "run_id": active.info.run_id if active else None,
                "tracking_uri": mlflow.get_tracking_uri(),
            }
        elif tracker == "wandb":
            import wandb

            run = wandb.run
            found[tracker] = {
                "id": run.id if run else None,
                "project": run.project if run else None,
                "entity": run.entity if run else None,
            }
    return found


def evaluation_metrics(scores: dict[str, Any], candidate: str) -> dict[str, float]:
    """A candidate's metrics in scores.json, per evaluation set, with interval and n:
    `eval_<set>/<metric>`, `..._ci_low`, `..._ci_high`, `..._n` (set: test or a transfer set)."""
    sets = {"test": scores, **scores.get("transfer", {})}
    flat: dict[str, float] = {}
    for set_name, entry in sets.items():
        metrics = entry.get("candidates", {}).get(candidate, {}).get("metrics", {})
        for metric, m in metrics.items():
            if m.get("value") is None:
                continue
            tag = f"eval_{set_name}/{metric}"
            flat[tag] = float(m["value"])
            for key in ("ci_low", "ci_high", "n"):
                if m.get(key) is not None:
                    flat[f"{tag}_{key}"] = float(m[key])
    return flat


def _tensorboard(where: dict[str, Any], metrics: dict[str, float], step: int, text: str) -> None:
    try:  # the writer transformers' TensorBoardCallback picks, in the same order
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from tensorboardX import SummaryWriter  # type: ignore[no-redef]
    writer = SummaryWriter(log_dir=where["logging_dir"], filename_suffix=f".{os.getpid()}.eval")
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, step)
    writer.add_text("evaluation", text, step)
    writer.close()


def _mlflow(where: dict[str, Any], metrics: dict[str, float], step: int, text: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(where["tracking_uri"])
    with mlflow.start_run(run_id=where["run_id"]):
        # MLflow metric names allow letters, digits, _ - . / and spaces.
        mlflow.log_metrics(metrics, step=step)
        mlflow.log_text(text, "evaluation.md")


def _wandb(where: dict[str, Any], metrics: dict[str, float], step: int, text: str) -> None:
    import wandb

    run = wandb.init(
        id=where["id"], project=where["project"], entity=where["entity"], resume="must"
    )
    run.summary.update({**metrics, "evaluation": text})
    run.finish()


def _trackio(where: dict[str, Any], metrics: dict[str, float], step: int, text: str) -> None:
    import trackio

    trackio.init(project=where["project"], name=where["name"], resume="must")
    trackio.log(metrics, step=step)
    trackio.finish()


LOGGERS: dict[str, Callable[[dict[str, Any], dict[str, float], int, str], None]] = {
    "tensorboard": _tensorboard,
    "mlflow": _mlflow,
    "wandb": _wandb,
    "trackio": _trackio,
}


def _text(scores: dict[str, Any], candidate: str) -> str:
    """The metrics as the report writes them (`value [low, high]`), one line each."""
    from potstill.report.stage import metric_text

    sets = {"test": scores, **scores.get("transfer", {})}
    lines = []
    for set_name, entry in sets.items():
        metrics = entry.get("candidates", {}).get(candidate, {}).get("metrics", {})
        for metric, m in metrics.items():
            lines.append(f"- {set_name} {metric}: {metric_text(m)} (n={m.get('n')})")
    return "\n".join(lines)


def log_evaluation(run: RunFolder, config: RunConfig, scores: dict[str, Any]) -> list[str]:
    """Log each trained student's evaluation metrics to the tracker runs its training logged
    to; returns `student/tracker` for each run logged to. A tracker that refuses (network,
    permissions) is a warning: scores.json is written by then and stays the record."""
    logged = []
    for student in config.students:
        record = run.student_dir(student.name) / TRACKERS_FILE
        if not student.train.report_to or not record.exists():
            continue
        runs = read_json(record)
        summary = read_record(run.student_dir(student.name) / "summary.json", TrainSummary)
        metrics = evaluation_metrics(scores, student.name)
        text = _text(scores, student.name)
        for tracker in student.train.report_to:
            if tracker not in runs:
                continue
            try:
                LOGGERS[tracker](runs[tracker], metrics, summary.steps, text)
            except Exception as exc:  # each tracker raises its own kinds
                say(f"evaluate: could not log {student.name}'s metrics to {tracker}: {exc}")
                continue
            logged.append(f"{student.name}/{tracker}")
    return logged
