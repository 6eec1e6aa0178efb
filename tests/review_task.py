"""A small review-classification task for whole-run tests: its rows (100 generated ones,
or twelve short ones), a teacher and judge that answer it (for tests/fault_server.py), and
endpoint settings for them."""

from __future__ import annotations

import json
from typing import Any

ITEMS = ["lamp", "kettle", "chair", "phone", "jacket", "blender", "tent", "watch", "desk", "bike"]
GOOD = ["great", "lovely", "sturdy", "excellent", "reliable"]
BAD = ["awful", "flimsy", "broken", "useless", "noisy"]
LABELS = ["positive", "negative"]
# Twelve short reviews with their labels, for runs that need only a handful of rows.
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


def reviews() -> list[dict[str, str]]:
    """100 reviews, half positive."""
    rows = []
    for i, item in enumerate(ITEMS):
        for j, word in enumerate(GOOD + BAD):
            label = "positive" if word in GOOD else "negative"
            rows.append({"text": f"Review {i}-{j}: the {item} was {word}.", "label": label})
    return rows


def reply(body: dict[str, Any]) -> str:
    """A teacher that knows the labels (JSON when asked for it), and a judge (model "judge")
    with the reply format potstill parses."""
    system = body["messages"][0]["content"]
    user = body["messages"][-1]["content"]
    if body["model"] == "judge":
        if "comparing two answers" in system:
            return "Reason: both answers give the label.\nVerdict: tie"
        return "Reason: the label fits the review.\nScore: 4"
    label = "positive" if any(f" {w}." in user for w in GOOD) else "negative"
    if "JSON" in system:
        return json.dumps({"reason": "the review's own words say so", "answer": label})
    return label


def endpoint(url: str, model: str, **settings: Any) -> dict[str, Any]:
    """An `openai` model config for the fault server, with short timeouts and retries."""
    return {
        "backend": "openai",
        "model": model,
        "base_url": url,
        "max_concurrency": 8,
        "timeout_s": 2.0,
        "max_retries": 6,
        "retry_max_wait_s": 0.05,
        **settings,
    }
