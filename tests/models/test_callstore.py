import asyncio
from collections.abc import Sequence
from pathlib import Path

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.callstore import CallStore, answer_all, request_key


class CountingModel:
    """Answers by echoing; counts calls. Stands in for a teacher the test can inspect."""

    identity = "counting"

    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[ChatRequest] = []
        self.fail_on = fail_on

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        self.sent.extend(requests)
        await asyncio.sleep(0)
        return [
            ChatResponse(text=None, error="boom")
            if r.messages[0]["content"] == self.fail_on
            else ChatResponse(text=r.messages[0]["content"].upper())
            for r in requests
        ]


def _requests(*texts: str) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": t}]) for t in texts]


def test_keys_depend_on_model_messages_sampling_and_sample() -> None:
    (req,) = _requests("a")
    keys = {
        request_key("m", req),
        request_key("other", req),
        request_key("m", ChatRequest(req.messages, max_tokens=5)),
        request_key("m", ChatRequest(req.messages, sample_index=1)),
    }
    assert len(keys) == 4


def test_a_rerun_pays_nothing_twice_and_failures_are_retried(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.sqlite")
    model = CountingModel(fail_on="b")
    first = answer_all(model, store, _requests("a", "b", "c"), chunk_size=2)
    assert [r.text for r in first] == ["A", None, "C"]
    store.close()
    store = CallStore(tmp_path / "calls.sqlite")  # a new process would reopen the file
    model = CountingModel()
    second = answer_all(model, store, _requests("a", "b", "c"), chunk_size=2)
    assert [r.messages[0]["content"] for r in model.sent] == ["b"]
    assert [r.text for r in second] == ["A", "B", "C"]
    assert store.count() == 3


def test_stored_answers_with_unknown_keys_still_load() -> None:
    stored = {"text": "hi", "finish_reason": "stop", "latency_s": 0.1, "from_a_newer_version": 1}
    assert ChatResponse.from_json(stored).text == "hi"
