"""calls.sqlite: every model call, keyed by what was asked, so nothing is paid for twice."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from pathlib import Path

from potstill.errors import sqlite_storage_errors
from potstill.models.base import (
    Admit,
    ChatModel,
    ChatRequest,
    ChatResponse,
    StreamingChatModel,
)


def request_key(model: str, request: ChatRequest) -> str:
    """Hash of (model, rendered messages, sampling parameters, sample index)."""
    payload = {
        "model": model,
        "messages": request.messages,
        "sampling": request.sampling(),
        "sample_index": request.sample_index,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class CallStore:
    """SQLite in WAL mode; one writer (the process's event loop).

    Answers are committed as they arrive (see `answer_all`). A commit survives the process
    being killed at any moment (SQLite's WAL makes it atomic); `synchronous=NORMAL` skips the
    fsync per commit, so a power cut (not a crash) may lose the last few, which a re-run
    then asks again.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with sqlite_storage_errors(path):
            self._db = sqlite3.connect(path, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "request TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL)"
            )
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def get(self, key: str) -> ChatResponse | None:
        with sqlite_storage_errors(self.path):  # a damaged file: an error naming it
            row = self._db.execute("SELECT response FROM calls WHERE key = ?", (key,)).fetchone()
        return ChatResponse.from_json(json.loads(row[0])) if row else None

    def get_many(self, keys: Sequence[str]) -> list[ChatResponse | None]:
        found: dict[str, ChatResponse] = {}
        for start in range(0, len(keys), 500):
            part = list(dict.fromkeys(keys[start : start + 500]))
            marks = ",".join("?" * len(part))
            query = f"SELECT key, response FROM calls WHERE key IN ({marks})"
            with sqlite_storage_errors(self.path):
                stored = self._db.execute(query, part).fetchall()
            for key, response in stored:
                found[key] = ChatResponse.from_json(json.loads(response))
        return [found.get(k) for k in keys]

    def put_many(self, items: Sequence[tuple[str, str, ChatRequest, ChatResponse]]) -> None:
        rows = [
            (key, model, json.dumps(req.__dict__), json.dumps(resp.to_json()), time.time())
            for key, model, req, resp in items
        ]
        with sqlite_storage_errors(self.path):
            self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?)", rows)
            self._db.commit()

    def count(self) -> int:
        with sqlite_storage_errors(self.path):
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


AnswerHook = Callable[[int, ChatResponse, bool], None]


def answer_all(
    model: ChatModel,
    store: CallStore,
    requests: Sequence[ChatRequest],
    chunk_size: int,
    on_progress: Callable[[int], None] | None = None,
    *,
    admit: Admit | None = None,
    on_answer: AnswerHook | None = None,
) -> list[ChatResponse]:
    """Answer requests through the store: stored ones are read, the rest are sent.

    A model that streams (an endpoint) has its successful answers committed as they arrive
    (those that arrive in the same turn of the event loop in one transaction, before the
    loop next waits on the network), so a crash loses only the calls in flight; a local
    model gets chunks of `chunk_size`, each committed before the next. Failed calls are
    returned but not stored, so a re-run retries them. `admit(i)` may hold request i back;
    `on_answer(i, response, fresh)` sees every answer, stored ones first (fresh=False).
    """
    keys = [request_key(model.identity, r) for r in requests]
    results = store.get_many(keys)
    missing = [i for i, r in enumerate(results) if r is None]
    for i, stored in enumerate(results):
        if stored is not None and on_answer:
            on_answer(i, stored, False)
    if on_progress:
        on_progress(len(requests) - len(missing))

    def record(i: int, answer: ChatResponse) -> None:
        results[i] = answer
        if on_answer:
            on_answer(i, answer, True)
        if on_progress:
            on_progress(1)

    if isinstance(model, StreamingChatModel):

        def commit(done: list[int]) -> None:
            ok = [(keys[i], model.identity, requests[i], results[i]) for i in done]
            store.put_many([(k, m, q, a) for k, m, q, a in ok if a is not None and a.ok])

        asyncio.run(_stream(model, requests, missing, admit, record, commit))
    else:
        _in_chunks(model, store, requests, keys, missing, chunk_size, admit, record)
    return [r for r in results if r is not None]


async def _stream(
    model: StreamingChatModel,
    requests: Sequence[ChatRequest],
    missing: list[int],
    admit: Admit | None,
    record: Callable[[int, ChatResponse], None],
    commit: Callable[[list[int]], None],
) -> None:
    """Take each answer as it arrives; commit the answers of one turn of the event loop
    together, before the loop next waits on the network (a group commit: one transaction
    for the answers that arrived at once, instead of one per answer)."""
    local_admit = (lambda j: admit(missing[j])) if admit else None
    loop = asyncio.get_running_loop()
    pending: list[int] = []
    # An error in a loop callback would only be logged; the commit's error (a full disk)
    # is kept here and raised where the answers are taken, so the stage stops with it.
    failed: list[Exception] = []

    def flush() -> None:
        if pending and not failed:
            done = pending.copy()
            pending.clear()
            try:
                commit(done)
            except Exception as exc:
                failed.append(exc)

    try:
        async with aclosing(model.stream([requests[i] for i in missing], local_admit)) as answers:
            async for j, answer in answers:
                if failed:
                    raise failed[0]
                record(missing[j], answer)
                if not pending:
                    # Runs at the loop's next turn, ahead of any wait on the network.
                    loop.call_soon(flush)
                pending.append(missing[j])
    except BaseException:
        flush()  # the answers that came before an error are kept
        raise
    flush()  # the last answers
    if failed:
        raise failed[0]


def _in_chunks(
    model: ChatModel,
    store: CallStore,
    requests: Sequence[ChatRequest],
    keys: list[str],
    missing: list[int],
    chunk_size: int,
    admit: Admit | None,
    record: Callable[[int, ChatResponse], None],
) -> None:
    for start in range(0, len(missing), chunk_size):
        idx = []
        for i in missing[start : start + chunk_size]:
            reason = admit(i) if admit else None
            if reason is None:
                idx.append(i)
            else:
                held = ChatResponse(None, "error", error=reason, error_kind="not_sent")
                record(i, held)
        answers = asyncio.run(model.generate([requests[i] for i in idx])) if idx else []
        # One commit for the chunk, then hooks in order.
        store.put_many(
            [(keys[i], model.identity, requests[i], a) for i, a in zip(idx, answers) if a.ok]
        )
        for i, answer in zip(idx, answers):
            record(i, answer)
