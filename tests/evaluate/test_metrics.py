import math

import pytest

from potstill.config import TaskConfig
from potstill.evaluate.metrics import score_candidate
from potstill.tasks import Example, Parsed, build_task


def test_classification_metrics_with_intervals_and_confusion() -> None:
    task = build_task(TaskConfig(kind="classification", labels=["yes", "no"]))
    refs = ["yes", "no"] * 10
    examples = [Example(str(i), {"text": "t"}, r) for i, r in enumerate(refs)]
    parsed = [Parsed("ok", r) if i % 4 else Parsed("no_answer") for i, r in enumerate(refs)]
    scores = score_candidate(task, parsed, examples, samples=300, seed=0)
    acc, f1 = scores.metrics["accuracy"], scores.metrics["macro_f1"]
    assert acc["value"] == pytest.approx(0.75) and acc["n"] == 20 and acc["higher_is_better"]
    assert acc["ci_low"] < 0.75 < acc["ci_high"]
    assert f1["ci_low"] <= f1["value"] <= f1["ci_high"] and f1["n"] == 20
    # yes: 5 of 10 answered (tp 5, fn 5) -> 2/3; no: all 10 right -> 1.0
    assert f1["value"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert scores.per_example[0] == {"accuracy": 0.0}
    assert scores.details["confusion"]["matrix"] == [[5, 0, 5], [0, 10, 0]]


def test_metrics_without_references_are_left_out_not_zero() -> None:
    task = build_task(TaskConfig(kind="conversation"))
    examples = [Example(str(i), {"message": "hi"}) for i in range(3)]
    parsed = [Parsed("ok", "Hello there!"), Parsed("ok", "Hi"), Parsed("no_answer")]
    scores = score_candidate(task, parsed, examples, samples=200, seed=0)
    assert set(scores.metrics) == {"length"}
    assert scores.metrics["length"]["value"] == 1.5 and scores.metrics["length"]["n"] == 2
    assert not scores.metrics["length"]["higher_is_better"]
    assert not math.isnan(scores.metrics["length"]["ci_low"])
