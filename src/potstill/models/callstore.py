"""calls.sqlite: every model call, keyed by what was asked, so nothing is paid for twice."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from potstill.models.base import ChatModel, ChatRequest, ChatResponse
from potstill.runs import sqlite_storage_errors


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
    """SQLite in WAL mode; one writer (the process's event loop), committed per chunk."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with sqlite_storage_errors(path):
            self._db = sqlite3.connect(path, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "request TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL)"
            )
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def get(self, key: str) -> ChatResponse | None:
        row = self._db.execute("SELECT response FROM calls WHERE key = ?", (key,)).fetchone()
        return ChatResponse.from_json(json.loads(row[0])) if row else None

    def put_many(self, items: Sequence[tuple[str, str, ChatRequest, ChatResponse]]) -> None:
        rows = [
            (key, model, json.dumps(req.__dict__), json.dumps(resp.to_json()), time.time())
            for key, model, req, resp in items
        ]
        with sqlite_storage_errors(self.path):
            self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?)", rows)
            self._db.commit()

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


def answer_all(
    model: ChatModel,
    store: CallStore,
    requests: Sequence[ChatRequest],
    chunk_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> list[ChatResponse]:
    """Answer requests through the store: cached ones are read, the rest sent in chunks.

    Each chunk's successful answers are committed before the next is sent, so a crash loses
    at most one chunk. Failed calls are returned but not stored, so a re-run retries them.
    """
    keys = [request_key(model.identity, r) for r in requests]
    results: list[ChatResponse | None] = [store.get(k) for k in keys]
    if on_progress:
        on_progress(sum(r is not None for r in results))
    missing = [i for i, r in enumerate(results) if r is None]
    for start in range(0, len(missing), chunk_size):
        idx = missing[start : start + chunk_size]
        answers = asyncio.run(model.generate([requests[i] for i in idx]))
        store.put_many(
            [(keys[i], model.identity, requests[i], a) for i, a in zip(idx, answers) if a.ok]
        )
        for i, answer in zip(idx, answers):
            results[i] = answer
        if on_progress:
            on_progress(len(idx))
    return [r for r in results if r is not None]
