"""A review-classification run whose teacher is the review teacher (`fake_teacher` in
tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from potstill.config import parse_config
from potstill.pipeline import open_run
from potstill.runs import RunFolder

THINGS = ["kettle", "lamp", "chair", "phone", "bag", "desk", "clock", "pan"]
WORDS = ["great", "awful", "lovely", "broken", "superb", "poor", "fine", "dull"]


def write_reviews(path: Path, n: int) -> Path:
    """`n` one-line reviews; the review teacher labels them right (its second sample not always)."""
    with path.open("w") as handle:
        for i in range(n):
            word = WORDS[i % len(WORDS)]
            label = "good" if word in ("great", "lovely", "superb", "fine") else "bad"
            text = f"Review {i}: the {THINGS[i * 3 % len(THINGS)]} was {word}."
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def review_config(
    data: Path,
    url: str,
    model: dict[str, Any],
    prompt: dict[str, Any],
    synth: dict[str, Any],
    **top: Any,
) -> dict[str, Any]:
    return {
        "name": "reviews",
        "task": {"kind": "classification", "labels": ["good", "bad"]},
        "dataset": {
            "path": str(data),
            "fields": {"text": "text", "answer": "label"},
            "test_size": 4,
        },
        "teacher": {
            "model": {
                "backend": "openai",
                "model": "fake-405b",
                "base_url": url,
                "max_concurrency": 8,
                "timeout_s": 0.5,
                "max_retries": 6,
                "retry_max_wait_s": 0.2,
                **model,
            },
            "prompt": {"style": "cot", "max_tokens": 48, "temperature": 0.7, **prompt},
        },
        "synth": synth,
        **top,
    }


@pytest.fixture
def review_run(tmp_path: Path) -> Callable[..., RunFolder]:
    """Make a run folder (config.yaml saved) for `rows` reviews, 4 of them held out."""

    def make(
        url: str,
        folder: str = "runs",
        rows: int = 24,
        model: dict[str, Any] | None = None,
        prompt: dict[str, Any] | None = None,
        synth: dict[str, Any] | None = None,
        **top: Any,
    ) -> RunFolder:
        data = write_reviews(tmp_path / f"reviews-{rows}.jsonl", rows)
        config = review_config(data, url, model or {}, prompt or {}, synth or {}, **top)
        return open_run(parse_config(config, "test config"), tmp_path / folder)

    return make
