from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import AsyncGenerator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from potstill.models.base import ChatRequest, ChatResponse, StreamingChatModel
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


def _committed(db: Path) -> int:
    with sqlite3.connect(db) as other:  # another process's view of the file
        return int(other.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


class StreamingModel:
    """Answers one request at a time, waiting (as on the network) before each; after the
    wait it records what the store holds. `burst` answers come at once, with no wait."""

    identity = "streaming"

    def __init__(self, db: Path, burst: int = 1) -> None:
        self.db = db
        self.burst = burst
        self.committed_before: list[int] = []

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        raise AssertionError("a streaming model is streamed")

    async def stream(
        self, requests: Sequence[ChatRequest], admit: Any = None
    ) -> AsyncGenerator[tuple[int, ChatResponse], None]:
        for i, request in enumerate(requests):
            if i % self.burst == 0:
                await asyncio.sleep(0)
                self.committed_before.append(_committed(self.db))
            reason = admit(i) if admit else None
            if reason:
                yield i, ChatResponse(None, "error", error=reason, error_kind="not_sent")
                continue
            yield i, ChatResponse(text=request.messages[0]["content"].upper())


def test_a_streamed_answer_is_committed_before_the_next_wait(tmp_path: Path) -> None:
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
    assert model.committed_before == [0, 1, 2, 2]  # each answer on disk before the next wait
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


def test_answers_that_arrive_together_are_committed_together(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.sqlite")
    commits: list[int] = []
    put_many = store.put_many

    def counted(items: Any) -> None:
        commits.append(len(items))
        put_many(items)

    store.put_many = counted  # type: ignore[method-assign]
    model = StreamingModel(tmp_path / "calls.sqlite", burst=3)
    answers = answer_all(model, store, _requests(*"abcdefg"), chunk_size=100)
    assert [a.text for a in answers] == list("ABCDEFG")
    assert commits == [3, 3, 1]  # one transaction per burst
    assert model.committed_before == [0, 3, 6]  # each burst on disk before the next wait


def test_a_held_back_request_is_not_sent_to_a_batching_model(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.sqlite")
    model = CountingModel()
    answers = answer_all(model, store, _requests("a", "b"), 8, admit=lambda i: "no" if i else None)
    assert [r.messages[0]["content"] for r in model.sent] == ["a"]
    assert answers[1].error == "no" and store.count() == 1


def test_a_damaged_store_is_an_error_naming_the_file(tmp_path: Path) -> None:
    from potstill.errors import DamagedRunFile

    path = tmp_path / "calls.sqlite"
    path.write_bytes(b"not a database at all" * 200)
    with pytest.raises(DamagedRunFile, match=rf"^{path}: SQLite cannot read it .*delete it"):
        CallStore(path)
    # Whole pages of a real store overwritten: the header still opens, a read does not.
    store = CallStore(path.with_name("real.sqlite"))
    rows = [
        (f"k{i}", "m", ChatRequest([{"role": "user", "content": "x" * 2000}], 4), ChatResponse("y"))
        for i in range(40)
    ]
    store.put_many(rows)
    store.close()
    real = path.with_name("real.sqlite")
    data = bytearray(real.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)
    real.write_bytes(bytes(data))
    with pytest.raises(DamagedRunFile, match=rf"^{real}: SQLite cannot read it"):
        reopened = CallStore(real)
        reopened.get_many([f"k{i}" for i in range(40)])
