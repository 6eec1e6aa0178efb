"""`potstill push`: the folders and cards it writes, and what it sends to a stand-in Hub on
127.0.0.1 that implements what huggingface_hub calls for create_repo + upload_folder."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# At module level: FastAPI resolves the handlers' (postponed) annotations here.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from run_records import train_summary

from potstill import __version__
from potstill.evaluate.stage import run_evaluate
from potstill.files import read_json, read_jsonl
from potstill.hub.push import HubError, push
from potstill.pipeline import prepare_split
from potstill.records import read_training_rows, write_record
from potstill.report.stage import comparison_markdown
from potstill.synth.stage import run_synth
from potstill.tasks import build_task


def hub_stand_in() -> Any:
    """The Hub's API as huggingface_hub uses it to create a repo and commit small files
    (each file `regular`, so the commit carries it base64-encoded); every request is kept in
    `app.state.requests` and every committed file in `app.state.files[(type, repo)]`."""
    app = FastAPI()
    app.state.requests = []
    app.state.files = {}
    app.state.repos = {}

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        body = await request.body()
        app.state.requests.append(
            (request.method, request.url.path, request.headers.get("authorization"), body)
        )
        return await call_next(request)

    @app.post("/api/repos/create")
    async def create(request: Request) -> Any:
        payload = await request.json()
        repo = f"{payload['organization']}/{payload['name']}"
        app.state.repos[payload.get("type", "model"), repo] = payload
        prefix = "" if payload.get("type", "model") == "model" else f"{payload['type']}s/"
        return {"url": f"{request.base_url}{prefix}{repo}", "name": repo}

    @app.post("/api/validate-yaml")
    async def validate(payload: dict[str, Any]) -> Any:
        yaml.safe_load(payload["content"].split("---")[1])  # the card's header parses
        return {"errors": [], "warnings": []}

    @app.post("/api/{kind}/{org}/{name}/preupload/{revision}")
    async def preupload(
        kind: str, org: str, name: str, revision: str, payload: dict[str, Any]
    ) -> Any:
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
            for f in payload["files"]
        ]
        return {"files": files}

    @app.post("/api/{kind}/{org}/{name}/commit/{revision}")
    async def commit(kind: str, org: str, name: str, revision: str, request: Request) -> Any:
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line]
        store = app.state.files.setdefault((kind.rstrip("s"), f"{org}/{name}"), {})
        for line in lines:
            if line["key"] == "file":
                store[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        return {
            "commitUrl": f"{request.base_url}{org}/{name}/commit/{'0' * 40}",
            "commitOid": "0" * 40,
            "pullRequestUrl": None,
        }

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "HEAD"])
    async def unknown(path: str) -> Any:
        return JSONResponse({"error": f"stand-in: no /{path}"}, status_code=404)

    return app


@pytest.fixture
def finished_run(make_evaluated_run: Callable[..., Any], scripted_endpoint: tuple[str, Any]) -> Any:
    """A math run with real synth output (the scripted teacher labels the training split),
    an evaluated student and its training summary."""
    run, config = make_evaluated_run(name="pushed")
    task = build_task(config.task)
    split = prepare_split(run, config)
    answers = scripted_endpoint[1].answers["teacher"]
    for example in split.train:
        asked = task.messages(example.inputs, config.teacher.prompt)[-1]["content"]
        answers["cot", asked] = json.dumps({"reason": "I add.", "answer": str(example.reference)})
    run_synth(run, config, task, split.train, split.test, {})
    run_evaluate(run, config, task, split.test)
    summary = train_summary(
        rows=16, dev_rows=0, steps=4, train_loss=1.25, eval_loss=None, seconds=2
    )
    write_record(run.student_dir("distilled") / "summary.json", summary)
    return run, config


def _front(card: str) -> dict[str, Any]:
    header = yaml.safe_load(card.split("---\n")[1])
    assert isinstance(header, dict)
    return header


def test_dry_run_writes_both_folders_and_cards_and_sends_nothing(finished_run: Any) -> None:
    run, config = finished_run
    pushed = push(
        run.root, "org/pushed-data", "org/pushed-student", license_id="apache-2.0", dry_run=True
    )
    assert pushed.urls == {}
    data, model = pushed.folders["dataset"], pushed.folders["model"]
    assert data == run.root / "hub" / "dataset" and model == run.root / "hub" / "model"
    # The rows as trainers take them: the run file's schema version stays in the run.
    pushed_rows = read_jsonl(data / "data" / "train.jsonl")
    assert pushed_rows == read_training_rows(run.synth_dir / "train.jsonl") and pushed_rows
    assert all("schema_version" not in row for row in pushed_rows)

    card = (data / "README.md").read_text()
    header = _front(card)
    assert header["license"] == "apache-2.0"
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "data/train.jsonl"}]
    summary = read_json(run.synth_dir / "summary.json")
    assert "- teacher: `teacher` (openai, " in card  # the teacher, its backend and URL
    assert f"- yield: {summary['accepted']} of {summary['inputs']} inputs kept" in card
    # synth/card.md as the synth stage wrote it, a level down: yield, accuracy, cost.
    table = "| outcome | rows | share |\n|---|---|---|\n"
    assert f"### Yield\n\n{table}| accepted | {summary['accepted']} |" in card
    assert "- teacher calls: 16, " in card and "(no price configured)" in card
    assert f"pushed with potstill {__version__}" in card
    assert f"made with potstill {run.manifest().versions['potstill']}" in card
    assert "## Teacher prompt (first training input)" in card and "[user]" in card
    assert yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False) in card

    card = (model / "README.md").read_text()
    header = _front(card)
    assert header["library_name"] == "transformers" and header["datasets"] == ["org/pushed-data"]
    assert "base_model" not in header  # a local folder is no hub id
    # The report's own comparison table, intervals and all (one renderer for both).
    scores = read_json(run.eval_dir / "scores.json")
    assert comparison_markdown(scores) in card and "[95% CI]" in card
    assert "- distilled: accuracy" in card  # its verdict line
    assert "| optimizer steps | 4 |" in card and "learning_rate: 0.0002" in card
    system = "Solve the math word problem. Reply with only an arithmetic expression"
    assert f"with this system prompt:\n\n~~~text\n{system}" in card
    assert (model / "model.safetensors").exists() and (model / "config.json").exists()


def test_push_sends_both_folders_private_with_the_token(
    finished_run: Any, start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = finished_run
    app = hub_stand_in()
    endpoint = start_server(app).removesuffix("/v1")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_token")
    pushed = push(run.root, "org/pushed-data", "org/pushed-student")
    assert pushed.urls == {
        "dataset": f"{endpoint}/datasets/org/pushed-data",
        "model": f"{endpoint}/org/pushed-student",
    }
    created = app.state.repos
    assert created["dataset", "org/pushed-data"]["visibility"] == "private"
    assert created["model", "org/pushed-student"]["visibility"] == "private"
    assert {auth for _, _, auth, _ in app.state.requests} == {"Bearer hf_stand_in_token"}
    # What arrived is what was written, byte for byte.
    for (kind, repo), folder in (
        (("dataset", "org/pushed-data"), pushed.folders["dataset"]),
        (("model", "org/pushed-student"), pushed.folders["model"]),
    ):
        sent = app.state.files[kind, repo]
        written = {
            str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
        }
        assert sent == written
    assert "data/train.jsonl" in app.state.files["dataset", "org/pushed-data"]


def test_without_a_token_push_says_how_to_get_one_and_sends_nothing(
    finished_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    run, _ = finished_run
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(HubError, match="no Hugging Face token: set HF_TOKEN or run `hf auth"):
        push(run.root, "org/pushed-data", None)
    with pytest.raises(HubError, match="--model 'not a repo': give a Hub repo id as ORG/NAME"):
        push(run.root, None, "not a repo")


def test_the_cli_push_is_one_clear_line_for_a_run_not_evaluated(tmp_path: Path) -> None:
    from potstill.config import parse_config
    from potstill.pipeline import open_run

    tree = {"name": "bare", "task": {"kind": "math"}, "dataset": {"generator": {"size": 8}}}
    run = open_run(parse_config(tree, "t.yaml"), tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "potstill", "push", str(run.root), "--model", "org/x", "--dry-run"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 2, done.stderr
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert "student distilled is not trained yet; run `potstill train" in out


def test_a_refused_token_is_one_line_naming_the_repo(
    tmp_path: Path, start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from potstill.hub.push import _upload

    refusing = FastAPI()

    @refusing.post("/api/repos/create")
    async def create() -> Any:
        return JSONResponse({"error": "Invalid credentials"}, status_code=401)

    monkeypatch.setenv("HF_ENDPOINT", start_server(refusing).removesuffix("/v1"))
    (tmp_path / "README.md").write_text("---\nlicense: other\n---\n")
    with pytest.raises(HubError, match=r"^model org/x: the token was refused; nothing more"):
        _upload(tmp_path, "org/x", "model", True, "hf_wrong")
