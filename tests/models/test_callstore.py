import asyncio
import sqlite3
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from potstill.models.base import ChatRequest, ChatResponse, StreamingChatModel
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


class StreamingModel:
    """Answers one request at a time; before each answer it records what the store holds."""

    identity = "streaming"

    def __init__(self, db: Path) -> None:
        self.db = db
        self.committed_before: list[int] = []

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        raise AssertionError("a streaming model is streamed")

    async def stream(
        self, requests: Sequence[ChatRequest], admit: Any = None
    ) -> AsyncGenerator[tuple[int, ChatResponse], None]:
        for i, request in enumerate(requests):
            with sqlite3.connect(self.db) as other:  # another process's view of the file
                self.committed_before.append(
                    other.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
                )
            reason = admit(i) if admit else None
            if reason:
                yield i, ChatResponse(None, "error", error=reason, error_kind="not_sent")
                continue
            await asyncio.sleep(0)
            yield i, ChatResponse(text=request.messages[0]["content"].upper())


def test_a_streamed_answer_is_committed_before_the_next_one_is_awaited(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.sqlite")
    model = StreamingModel(tmp_path / "calls.sqlite")
    assert isinstance(model, StreamingChatModel)
    seen: list[tuple[int, bool]] = []
    answers = answer_all(
        model,
        store,
        _requests("a", "b", "c", "d"),
        chunk_size=100,
        admit=lambda i: "over budget" if i == 2 else None,
        on_answer=lambda i, r, fresh: seen.append((i, fresh)),
    )
    assert model.committed_before == [0, 1, 2, 2]  # each answer on disk as the next comes
    assert [a.text for a in answers] == ["A", "B", None, "D"]
    assert answers[2].error_kind == "not_sent"
    store.close()
    store = CallStore(tmp_path / "calls.sqlite")
    seen.clear()
    again = answer_all(
        model,
        store,
        _requests("a", "b", "c", "d"),
        100,
        on_answer=lambda i, r, f: seen.append((i, f)),
    )
    assert [a.text for a in again] == ["A", "B", "C", "D"]
    assert seen == [(0, False), (1, False), (3, False), (2, True)]  # stored first, then fresh


def test_a_held_back_request_is_not_sent_to_a_batching_model(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.sqlite")
    model = CountingModel()
    answers = answer_all(model, store, _requests("a", "b"), 8, admit=lambda i: "no" if i else None)
    assert [r.messages[0]["content"] for r in model.sent] == ["a"]
    assert answers[1].error == "no" and store.count() == 1
