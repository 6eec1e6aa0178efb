"""`potstill push RUN --dataset ORG/NAME --model ORG/NAME`: the synthetic training set and a
student on the Hugging Face Hub, private unless asked otherwise.

The folders and their cards are written first, under runs/<name>/hub/ (each whole or not at
all), so `--dry-run` stops there and a user can read exactly what would be sent; the upload is
`huggingface_hub`'s `create_repo` + `upload_folder` of those folders, to `HF_ENDPOINT` when it
is set. The token is the usual one (`HF_TOKEN`, or `hf auth login`'s file).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from potstill.config import RunConfig
from potstill.export import ExportError, trained_student
from potstill.files import atomic_write_text, write_jsonl
from potstill.hub import HubError
from potstill.hub.cards import dataset_card, model_card
from potstill.records import read_training_rows
from potstill.runs import RunFolder

WEIGHTS = ("merged", "adapter")
# The Hub's repo ids: a namespace and a name of letters, digits, `-`, `_`, `.`.
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass
class Pushed:
    """What `push` wrote (the folders) and, unless a dry run, where it went (the URLs)."""

    folders: dict[str, Path] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)


def _repo(option: str, repo: str) -> str:
    if not REPO_ID.match(repo) or ".." in repo or repo.endswith(".git"):
        raise HubError(f"{option} {repo!r}: give a Hub repo id as ORG/NAME")
    return repo


def _whole(target: Path, fill: Any) -> Path:
    """Build a folder under a temp name, then rename it over `target` (whole or not at all)."""
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fill(staging)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_dataset_folder(run: RunFolder, config: RunConfig, repo: str, license_id: str) -> Path:
    """runs/<name>/hub/dataset: data/train.jsonl (the synth stage's rows) and README.md."""
    rows_path = run.synth_dir / "train.jsonl"
    if not (rows_path.exists() and (run.synth_dir / "summary.json").exists()):
        raise HubError(f"{rows_path}: no synthetic data yet; run `potstill synth {run.root}` first")
    # The Hub dataset holds the rows as trainers take them: no schema version.
    rows = read_training_rows(rows_path)

    def fill(folder: Path) -> None:
        write_jsonl(folder / "data" / "train.jsonl", rows)
        atomic_write_text(
            folder / "README.md", dataset_card(run, config, repo, license_id, len(rows))
        )

    return _whole(run.root / "hub" / "dataset", fill)


def write_model_folder(
    run: RunFolder,
    config: RunConfig,
    repo: str,
    student_name: str | None,
    weights: str,
    license_id: str,
    dataset_repo: str | None,
) -> Path:
    """runs/<name>/hub/model: the student's merged model (or its LoRA adapter) and README.md."""
    if weights not in WEIGHTS:
        raise HubError(f"--weights must be one of {', '.join(WEIGHTS)}")
    try:
        student = trained_student(run, config, student_name)
    except ExportError as exc:
        raise HubError(str(exc)) from None
    source = run.student_dir(student.name) / ("adapter" if weights == "adapter" else "final")
    if not source.exists():
        raise HubError(f"{source}: student {student.name} has no LoRA adapter (method full)")
    if not (run.eval_dir / "scores.json").exists():
        raise HubError(
            f"{run.eval_dir / 'scores.json'}: the model card holds the evaluation; run "
            f"`potstill evaluate {run.root}` first"
        )
    card = model_card(run, config, student, repo, license_id, weights, dataset_repo)

    def fill(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        # A README of the trainer's (peft writes one into adapter/) gives way to the card.
        atomic_write_text(folder / "README.md", card)

    return _whole(run.root / "hub" / "model", fill)


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write "
            "access), then push again; `--dry-run` writes the folders without one"
        )
    return token


def _upload(folder: Path, repo: str, repo_type: str, private: bool, token: str) -> str:
    import httpx2  # huggingface_hub's HTTP client: its errors (HfHubHTTPError among them)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    # HF_ENDPOINT read now: huggingface_hub reads it once, when it is first imported.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        url = api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=folder,
            repo_id=repo,
            repo_type=repo_type,
            commit_message=f"potstill push: {folder.name}",
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        why = "the token was refused" if status in (401, 403) else str(exc).splitlines()[0]
        raise HubError(f"{repo_type} {repo}: {why}; nothing more was sent") from None
    except httpx2.HTTPError as exc:  # cannot connect, timed out
        raise HubError(f"{repo_type} {repo}: {api.endpoint}: {exc}; push again later") from None
    return str(url)


def push(
    run_dir: Path,
    dataset: str | None,
    model: str | None,
    *,
    student: str | None = None,
    weights: str = "merged",
    license_id: str = "other",
    public: bool = False,
    dry_run: bool = False,
) -> Pushed:
    """Write the folders and cards; then, unless `dry_run`, upload them (private unless
    `public`)."""
    if dataset is None and model is None:
        raise HubError("name what to push: --dataset ORG/NAME, --model ORG/NAME, or both")
    dataset = _repo("--dataset", dataset) if dataset else None
    model = _repo("--model", model) if model else None
    run = RunFolder(run_dir)
    config = run.load_config()
    pushed = Pushed()
    if dataset:
        pushed.folders["dataset"] = write_dataset_folder(run, config, dataset, license_id)
    if model:
        pushed.folders["model"] = write_model_folder(
            run, config, model, student, weights, license_id, dataset
        )
    if dry_run:
        return pushed
    token = _token()
    if dataset:
        pushed.urls["dataset"] = _upload(
            pushed.folders["dataset"], dataset, "dataset", not public, token
        )
    if model:
        pushed.urls["model"] = _upload(pushed.folders["model"], model, "model", not public, token)
    return pushed
