from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.callstore import CallStore, answer_all, request_key

if TYPE_CHECKING:
    from conftest import SmallDisk


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


def test_a_full_disk_keeps_every_committed_answer(small_disk: SmallDisk) -> None:
    path = small_disk.root / "calls.sqlite"
    store = CallStore(path)
    answer_all(CountingModel(), store, _requests("a", "b"), chunk_size=2)
    small_disk.fill()
    with pytest.raises(OSError) as err:  # the second chunk cannot be committed
        answer_all(CountingModel(), store, _requests("a", "b", *"cdefgh"), chunk_size=3)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert "database or disk is full" in str(err.value)
    store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone() == (2,)
    small_disk.free()
    store, model = CallStore(path), CountingModel()
    answers = answer_all(model, store, _requests("a", "b", *"cdefgh"), chunk_size=3)
    assert [a.text for a in answers] == [t.upper() for t in "abcdefgh"]
    assert len(model.sent) == 6 and store.count() == 8
