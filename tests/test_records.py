"""The errors.jsonl rows every stage writes, from one builder."""

from potstill.models.base import ChatResponse
from potstill.records import call_failure, error_row


def test_a_failed_call_becomes_the_same_row_in_synth_and_evaluate() -> None:
    failed = ChatResponse(
        text=None, error="HTTP 500 from the endpoint", error_kind="http_500", attempts=4
    )
    failure = call_failure(failed)
    assert failure == {
        "error": "HTTP 500 from the endpoint",
        "error_kind": "http_500",
        "attempts": 4,
    }
    synth = error_row("ex1", "label", failure, sample=2)
    evaluate = error_row("ex1", "predict", failure, candidate="teacher", transfer_set="rephrased")
    assert synth == {
        "id": "ex1",
        "phase": "label",
        "sample": 2,
        "status": "http_500",
        "reason": "HTTP 500 from the endpoint",
        "attempts": 4,
    }
    assert {k: v for k, v in evaluate.items() if k not in ("candidate", "transfer_set")} == {
        **{k: v for k, v in synth.items() if k != "sample"},
        "phase": "predict",
    }
    assert evaluate["candidate"] == "teacher" and evaluate["transfer_set"] == "rephrased"


def test_an_answered_call_has_no_failure_and_an_unknown_kind_is_error() -> None:
    assert call_failure(ChatResponse(text="4")) == {}
    row = error_row("g1", "generate", {"error": "boom", "error_kind": None, "attempts": 1})
    assert row["status"] == "error" and row["reason"] == "boom"
