"""A classification run whose teacher is an OpenAI-compatible endpoint over real HTTP."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from potstill.cli import app

REVIEWS = {
    "Works great, I love it.": "positive",
    "Broke after a day.": "negative",
    "Fantastic sound and battery.": "positive",
    "Cheap plastic, cracked at once.": "negative",
    "Exactly as described, happy.": "positive",
    "Arrived damaged and late.": "negative",
    "My kids adore it.": "positive",
    "Waste of money.": "negative",
    "Best purchase this year.": "positive",
    "Stopped charging in a week.": "negative",
    "Comfortable and light.": "positive",
    "The zipper fell off.": "negative",
}
SENTINEL = "sk-potstill-sentinel-4f9a"


def _labelling_server() -> Any:
    """A teacher that knows every review's label and answers in the cot JSON format."""
    from fastapi import FastAPI, Header

    app = FastAPI()
    seen: list[str] = []

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any], authorization: str = Header("")) -> dict[str, Any]:
        seen.append(authorization)
        review = body["messages"][-1]["content"]
        label = REVIEWS.get(review, "positive")
        content = json.dumps({"reason": "the reviewer's words", "answer": label})
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
        }

    app.state.seen = seen
    return app


def test_endpoint_teacher_run_keeps_the_key_out_of_every_file(
    start_server: Callable[[Any], str],
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = _labelling_server()
    url = start_server(api)
    monkeypatch.setenv("POTSTILL_TEST_TEACHER_KEY", SENTINEL)
    data = tmp_path / "reviews.csv"
    data.write_text(
        "review,sentiment\n" + "".join(f'"{text}",{label}\n' for text, label in REVIEWS.items())
    )
    config = {
        "name": "endpoint",
        "task": {"kind": "classification", "labels": ["positive", "negative"]},
        "dataset": {
            "path": "reviews.csv",
            "fields": {"text": "review", "answer": "sentiment"},
            "test_size": 4,
        },
        "teacher": {
            "model": {
                "backend": "openai",
                "model": "big-teacher",
                "base_url": url,
                "api_key_env": "POTSTILL_TEST_TEACHER_KEY",
                "price_per_million_input": 2.0,
                "price_per_million_output": 8.0,
            },
            "prompt": {"style": "cot", "max_tokens": 32},
        },
        "students": [
            {
                "name": "distilled",
                "base": {"model": str(tiny_model_dir)},
                "train": {"epochs": 1, "batch_size": 4},
            }
        ],
        "synth": {"prompt": {"style": "zero_shot", "max_tokens": 4}},
        "evaluate": {"bootstrap_samples": 200},
        # The judge is the same endpoint, so its calls carry the key too.
        "judge": {
            "model": {
                "backend": "openai",
                "model": "big-teacher",
                "base_url": url,
                "api_key_env": "POTSTILL_TEST_TEACHER_KEY",
            },
            "sample_size": 4,
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output

    run = runs / "endpoint"
    summary = json.loads((run / "synth" / "summary.json").read_text())
    assert summary["accepted"] == 8 and summary["teacher_accuracy_on_train"] == 1.0
    rows = [json.loads(line) for line in (run / "synth" / "train.jsonl").read_text().splitlines()]
    assert {r["completion"][0]["content"] for r in rows} <= {"positive", "negative"}
    # 8 calls of 40 prompt and 12 completion tokens at $2 and $8 per million
    report = (run / "report.md").read_text()
    assert "Teacher cost of the synthetic data: $0.0014 (8 calls, 320 + 96 tokens)" in report
    assert json.loads((run / "manifest.json").read_text())["stages"]["synth"]["cost_usd"] == (
        0.001408
    )
    scores = json.loads((run / "eval" / "scores.json").read_text())
    assert scores["candidates"]["teacher"]["accuracy"] == 1.0
    assert scores["judge"]["calls"] > 0 and scores["judge"]["same_as_teacher"]
    assert all(h == f"Bearer {SENTINEL}" for h in api.state.seen)  # the key did reach the API
    leaks = [p for p in run.rglob("*") if p.is_file() and SENTINEL.encode() in p.read_bytes()]
    assert leaks == []
    assert SENTINEL not in result.output
