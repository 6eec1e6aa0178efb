"""The Batch API client's parts: request lines, splitting under the limits, reading output
and error files, batch prices, and a budget that adopts a killed run's reservations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from potstill.config import ConfigError, parse_config
from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.batch import read_results, request_line, split_lines
from potstill.models.cost import Budget, Price, teacher_price
from potstill.models.ledger import SpendLedger

BASE = {"name": "t", "task": {"kind": "math"}, "dataset": {"path": "x.jsonl"}}
ENDPOINT = {"backend": "openai", "model": "big", "base_url": "http://127.0.0.1:1/v1"}


def config(**top: Any) -> Any:
    return parse_config({**BASE, **top}, "t.yaml")


def test_a_request_line_is_the_online_body_under_its_key() -> None:
    request = ChatRequest([{"role": "user", "content": "2+2?"}], 16, 0.5, 2)
    line = json.loads(request_line("big", "/v1/chat/completions", "k1", request))
    assert line == {
        "custom_id": "k1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "big",
            "messages": [{"role": "user", "content": "2+2?"}],
            "max_tokens": 16,
            "temperature": 0.5,
            "seed": 2,
        },
    }


def test_lines_are_split_under_the_request_and_byte_limits() -> None:
    lines = [b"x" * 10 for _ in range(7)]
    assert split_lines(lines, 3, 1000) == [[0, 1, 2], [3, 4, 5], [6]]
    assert split_lines(lines, 100, 25) == [[0, 1], [2, 3], [4, 5], [6]]
    with pytest.raises(ValueError, match="max_file_bytes"):
        split_lines([b"x" * 30], 100, 25)


def test_output_and_error_lines_become_answers_and_classified_failures() -> None:
    answer = {
        "choices": [{"message": {"content": "4 sk-secret"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
    output = "\n".join(
        [
            json.dumps({"custom_id": "ok", "response": {"status_code": 200, "body": answer}}),
            '{"custom_id": "cut", "resp',
        ]
    )
    errors = "\n".join(
        json.dumps(line)
        for line in [
            {"custom_id": "busy", "response": {"status_code": 500, "body": {"error": {}}}},
            {"custom_id": "bad", "response": {"status_code": 400, "body": {"error": {}}}},
            {"custom_id": "late", "response": None, "error": {"code": "batch_expired"}},
            {"custom_id": "vllm", "response": {"status_code": 400}, "error": "bad request"},
        ]
    )
    results, notes = read_results(output, errors, "sk-secret", attempts=2)
    ok = results["ok"].response
    assert (ok.text, ok.prompt_tokens, ok.completion_tokens, ok.attempts) == ("4 ***", 7, 2, 2)
    kinds = {k: (r.response.error_kind, r.retryable) for k, r in results.items() if k != "ok"}
    assert kinds == {
        "busy": ("http_500", True),
        "bad": ("http_400", False),
        "late": ("batch_expired", True),
        "vllm": ("http_400", False),
    }
    assert "cut" not in results
    assert len(notes) == 1 and notes[0].startswith("line 2 of the output file is no batch result")


def test_batch_mode_is_for_an_endpoint_teacher_and_prices_it_at_batch_prices() -> None:
    with pytest.raises(ConfigError, match="mode: batch needs backend: openai"):
        config(teacher={"model": {"mode": "batch"}})
    with pytest.raises(ConfigError, match=r"judge\.model\.mode: batch is for teacher\.model only"):
        config(judge={"model": {**ENDPOINT, "mode": "batch"}})
    batch = {"price_per_million_input": 1.0, "price_per_million_output": 4.0}
    online = {"price_per_million_input": 2.0, "price_per_million_output": 8.0}
    # A budget needs a price: the batch prices are one, in batch mode.
    cheap = config(
        teacher={"model": {**ENDPOINT, "mode": "batch", "batch": batch}}, budget={"max_usd": 1}
    )
    assert teacher_price(cheap.teacher.model) == Price(1.0, 4.0)
    both = config(teacher={"model": {**ENDPOINT, **online, "batch": batch}})
    assert teacher_price(both.teacher.model) == Price(2.0, 8.0)  # online mode
    unset = config(teacher={"model": {**ENDPOINT, **online, "mode": "batch"}})
    assert teacher_price(unset.teacher.model) == Price(2.0, 8.0)  # no batch price: online


def test_an_answer_to_a_call_an_earlier_process_sent_settles_its_reservation(
    tmp_path: Path,
) -> None:
    request = ChatRequest([{"role": "user", "content": "hello"}], 100)
    price = Price(1.0, 1.0)
    killed = Budget(10.0, price, SpendLedger(tmp_path / "calls.sqlite"))
    assert killed.admit(0, request, "k") is None  # reserved, sent, and the process dies
    worst = killed.worst_case(request)
    resumed = Budget(10.0, price, SpendLedger(tmp_path / "calls.sqlite"))
    assert resumed.spent == pytest.approx(worst)
    answer = ChatResponse("hi", prompt_tokens=10, completion_tokens=5)
    resumed.settle(3, answer, "k", fresh=True)  # re-attached: never admitted here
    assert resumed.spent == pytest.approx(15 / 1e6)
    assert resumed.ledger is not None and resumed.ledger.spent() == pytest.approx(15 / 1e6)
    assert resumed.ledger.unsettled("k") is None
