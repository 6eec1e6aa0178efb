"""The `potstill` command line: thin typed commands over the library."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text
from typer.core import TyperOption

from potstill import __version__
from potstill.config import ConfigError, builtin_config_path, load_config
from potstill.errors import EXIT_INCOMPLETE, EXIT_USER, StageIncomplete, UserError
from potstill.progress import console

_option_type = TyperOption.display_type_rich


def _flag_shows_no_type(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so --help shows no `<bool>` after it (typer shows one)."""
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_shows_no_type  # type: ignore[method-assign]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

RunsDir = Annotated[
    Path,
    typer.Option("--runs-dir", help="Folder that holds run folders.", file_okay=False),
]

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Config overrides as dotted key=value, e.g. students.0.train.epochs=3"),
]
RunArg = Annotated[Path, typer.Argument(help="A run folder, e.g. runs/demo.")]


def _print_version(value: bool) -> None:
    if value:
        print(f"potstill {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Distill a large teacher LLM into a small student for one task, and show with evidence
    whether it worked. A run goes synth -> train -> evaluate -> report; all of it lives in
    runs/<name>/."""


# A file that cannot be written (or read) for a reason the user fixes, not potstill.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_ALLOWED = {errno.EROFS, errno.EACCES, errno.EPERM}
_NOT_A_FOLDER = {errno.ENOTDIR, errno.EEXIST}  # a file where a run's folder must be


def _storage_message(exc: OSError) -> str | None:
    if exc.filename is None or exc.errno not in _NO_SPACE | _NOT_ALLOWED | _NOT_A_FOLDER:
        return None
    if exc.errno in _NOT_A_FOLDER:
        return (
            f"{exc.filename}: {exc.strerror}: a file stands where a folder must be; move it, "
            "or choose another --runs-dir, then run the same command again."
        )
    fix = (
        "free some space"
        if exc.errno in _NO_SPACE
        else "make it writable (or choose another --runs-dir)"
    )
    return (
        f"{exc.filename}: {exc.strerror}. Files written before are whole; {fix}, then run "
        "the same command again to go on from there."
    )


def _guard(action: Callable[[], T]) -> T:
    """Bad input, a full disk or a read-only folder end with one clear message and exit
    code 2, not a traceback; a stage with failed calls to retry ends with exit code 3."""
    try:
        return action()
    except UserError as exc:
        message = str(exc)
    except StageIncomplete as exc:
        console.print(
            Text.assemble(("incomplete:", "yellow"), " ", str(exc)), highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_INCOMPLETE) from None
    except OSError as exc:
        found = _storage_message(exc)
        if found is None:
            raise
        message = found
    # Plain text (a key or path that looks like rich markup stays as written), not wrapped
    # to the terminal, so a path in it stays whole for a log or a grep.
    console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USER)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="A run config (YAML).")],
    overrides: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
    stop_after: Annotated[
        str | None,
        typer.Option(help="Run no stage after this one (synth, train, evaluate, report)."),
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="Load the dataset and transfer sets anew (a file changed since the run pinned "
            "it) and run every stage again.",
        ),
    ] = False,
) -> None:
    """Run every stage of CONFIG that is missing or stale (synth, train, evaluate, report)."""
    from potstill.pipeline import absolutize, run_pipeline
    from potstill.runs import STAGES

    def action() -> None:
        if stop_after is not None and stop_after not in STAGES:
            raise ConfigError(f"--stop-after must be one of {', '.join(STAGES)}")
        cfg = absolutize(load_config(config, overrides), config.parent)
        run_pipeline(cfg, runs_dir, stop_after, refresh)

    _guard(action)


@app.command()
def demo(overrides: Overrides = None, runs_dir: RunsDir = Path("runs")) -> None:
    """Distill offline on the built-in demo: packaged SmolLM2 teacher and student, generated
    arithmetic word problems. Writes runs/demo/report.md and report.html."""
    from potstill.pipeline import run_pipeline

    _guard(lambda: run_pipeline(load_config(builtin_config_path("demo"), overrides), runs_dir))


def _one_stage(stage: str, run_dir: Path) -> None:
    from potstill.pipeline import run_stage
    from potstill.runs import RunFolder

    def action() -> None:
        folder = RunFolder(run_dir)
        run_stage(folder, folder.load_config(), stage)

    _guard(action)


@app.command()
def synth(
    run_dir: RunArg,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Estimate the calls, tokens and cost; call nothing, write nothing."
        ),
    ] = False,
) -> None:
    """Have the teacher label the training inputs; writes synth/ (train.jsonl, card.md).
    Exit code 3 when some teacher calls failed: run it again to retry them."""
    if not dry_run:
        _one_stage("synth", run_dir)
        return
    from potstill.pipeline import estimate_synth
    from potstill.runs import RunFolder
    from potstill.synth.estimate import print_estimate

    def action() -> None:
        folder = RunFolder(run_dir)
        print_estimate(estimate_synth(folder, folder.load_config()))

    _guard(action)


@app.command()
def train(run_dir: RunArg) -> None:
    """Fine-tune each student on its own rows; writes students/<name>/ (train.jsonl, final/,
    train_log.jsonl). An interrupted run resumes from its last complete checkpoint. Runs under
    `accelerate launch ... -m potstill train RUN` too (docs/training.md)."""
    _one_stage("train", run_dir)


@app.command()
def evaluate(run_dir: RunArg) -> None:
    """Score teacher, base student and trained students on the test split; writes eval/."""
    _one_stage("evaluate", run_dir)


@app.command()
def report(run_dir: RunArg) -> None:
    """Write report.md, report.html and plots/ from eval/ and synth/."""
    _one_stage("report", run_dir)


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Argument(
            help="A model folder (e.g. runs/demo/students/"
            "distilled/final), packaged:NAME, or a hub id; with --student, a run folder."
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    name: Annotated[str | None, typer.Option(help="Model name clients use.")] = None,
    student: Annotated[
        str | None,
        typer.Option(
            help="Serve this trained student of the run folder MODEL for its task: clients "
            "send only the input, replies carry the parsed answer."
        ),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Require `Authorization: Bearer KEY`, KEY read from this variable."),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option(help="The most tokens one request may generate.", min=1)
    ] = 1024,
    max_batch: Annotated[int, typer.Option(help="Requests generated together.", min=1)] = 32,
    max_waiting: Annotated[
        int, typer.Option(help="Requests queued beyond the batch; more get HTTP 429.", min=0)
    ] = 64,
) -> None:
    """Serve a local model as an OpenAI-compatible endpoint (/v1/chat/completions, /health):
    continuous batching, streaming, an optional API key."""
    from potstill.serve import serve as serve_model

    _guard(
        lambda: serve_model(
            model,
            host,
            port,
            name,
            student=student,
            api_key_env=api_key_env,
            max_tokens=max_tokens,
            max_batch=max_batch,
            max_waiting=max_waiting,
        )
    )


@app.command()
def grade(
    run_dir: RunArg,
    host: Annotated[str, typer.Option(help="Address to listen on (and to put in links).")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(help="Port to listen on (and to put in links).", min=1, max=65535)
    ] = 8000,
    add_grader: Annotated[
        str | None, typer.Option("--add-grader", help="Add a grader; prints their link.")
    ] = None,
    summary: Annotated[
        bool, typer.Option("--summary", help="Print human scores and agreement, then exit.")
    ] = False,
    export: Annotated[
        Path | None, typer.Option(help="Write every grade to FILE (.csv or .jsonl), then exit.")
    ] = None,
) -> None:
    """Human grading: serve blind pointwise and pairwise pages to graders (grades.sqlite)."""
    from potstill.grade import commands

    def action() -> None:
        if add_grader is not None:
            commands.add_grader(run_dir, add_grader, host, port)
        elif summary:
            print(commands.summary(run_dir))  # stdout, like the link: easy to redirect
        elif export is not None:
            count = commands.export(run_dir, export)
            console.print(f"{count} grades written to {export}", markup=False, highlight=False)
        else:
            commands.serve(run_dir, host, port)

    _guard(action)


def _ask_on_a_terminal() -> Callable[[str, Sequence[str]], str] | None:
    """A question to the user when there is one at a terminal, else None (placeholders)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None

    def ask(what: str, choices: Sequence[str]) -> str:
        while True:
            answer = str(typer.prompt(f"{what}? ({', '.join(choices)})")).strip()
            if answer in choices:
                return answer
            console.print(f"not one of {', '.join(choices)}", markup=False, highlight=False)

    return ask


@app.command()
def check(
    config: Annotated[Path, typer.Argument(help="A run config (YAML).")],
    overrides: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Check CONFIG as a run would before its first model call, listing every problem (exit
    code 2 if any); then show what the run would do. Calls no model and writes nothing."""
    from potstill.check import run_check

    code = _guard(lambda: run_check(config, overrides, runs_dir))
    if code:
        raise typer.Exit(code)


@app.command()
def init(
    data: Annotated[Path, typer.Argument(help="A .jsonl, .csv or .parquet file (or hf:org/name).")],
    kind: Annotated[
        str | None, typer.Option(help="The task kind, when not the one guessed.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The config to write; default: <data name>.yaml here.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Look at DATA (columns, a few values), guess the task kind, field mapping and labels,
    and write a commented config that runs offline as it is."""
    from potstill.scaffold import init_config

    _guard(lambda: init_config(data, kind, out, _ask_on_a_terminal(), force))


@app.command()
def schema() -> None:
    """Print the JSON Schema of a run config, for completion and checking in an editor
    (docs/config.md says how to use it with VS Code)."""
    from potstill.config_reference import schema_text

    sys.stdout.write(schema_text())


@app.command()
def push(
    run_dir: RunArg,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset repo (ORG/NAME) for the synthetic training set.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model repo (ORG/NAME) for a student.")] = None,
    student: Annotated[
        str | None, typer.Option(help="The student to push; default: the run's only one.")
    ] = None,
    weights: Annotated[
        str, typer.Option(help="merged: the standalone model; adapter: the LoRA adapter alone.")
    ] = "merged",
    license_id: Annotated[
        str, typer.Option("--license", help="The cards' licence id (e.g. apache-2.0).")
    ] = "other",
    public: Annotated[
        bool, typer.Option("--public", help="Make new repos public (default: private).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Write the folders and cards under RUN/hub/; send nothing."),
    ] = False,
) -> None:
    """Upload the synthetic training set and a student to the Hugging Face Hub, each with a
    card saying where it came from (docs/integrations.md). Token: HF_TOKEN or `hf auth login`."""
    from potstill.hub.push import push as push_run

    def action() -> None:
        pushed = push_run(
            run_dir,
            dataset,
            model,
            student=student,
            weights=weights,
            license_id=license_id,
            public=public,
            dry_run=dry_run,
        )
        for what, folder in pushed.folders.items():
            sent = pushed.urls.get(what)
            line = f"{what}: {folder}" + (f" -> {sent}" if sent else " (not sent: --dry-run)")
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    _guard(action)


@app.command()
def export(
    run_dir: RunArg,
    student: Annotated[
        str | None, typer.Option(help="The student to export; default: the run's only one.")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="hf: the merged Hugging Face folder; ollama: the same with an Ollama Modelfile.",
        ),
    ] = "hf",
    out: Annotated[
        Path | None, typer.Option(help="Folder to write; default: RUN/export/<student>-<format>.")
    ] = None,
) -> None:
    """Write a trained student for local runtimes (docs/integrations.md)."""
    from potstill.export import export_student
    from potstill.runs import RunFolder

    def action() -> None:
        folder = RunFolder(run_dir)
        done = export_student(folder, folder.load_config(), student, fmt, out)
        console.print(
            f"{done.folder}: {', '.join(done.files)}", markup=False, highlight=False, soft_wrap=True
        )

    _guard(action)


def main() -> None:
    sys.exit(app())
