"""The run's spending ledger, a table in calls.sqlite: what the synth stage's budgeted calls
cost, kept across processes, so a resumed run starts from what was already spent.

Each call's worst case is committed before the call is sent, and set to its real cost when
the answer comes. A call with no cost set (its process died while the call was in flight)
counts at its worst case: the endpoint may have answered, and billed, it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from potstill.errors import sqlite_storage_errors


class SpendLedger:
    """One connection to calls.sqlite (WAL, beside the call store's); the run folder's
    write lock makes this process its only writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite_storage_errors(path):
            self._db = sqlite3.connect(path, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spend (id INTEGER PRIMARY KEY, key TEXT NOT NULL, "
                "worst_usd REAL NOT NULL, cost_usd REAL, created REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS spend_key ON spend (key)")
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def spent(self) -> float:
        """US dollars spent: real costs, and the worst case of calls never settled."""
        row = self._db.execute("SELECT SUM(COALESCE(cost_usd, worst_usd)) FROM spend").fetchone()
        return float(row[0] or 0.0)

    def holds(self, key: str) -> bool:
        """Whether the ledger counts a call with this call-store key."""
        found = self._db.execute("SELECT 1 FROM spend WHERE key = ? LIMIT 1", (key,))
        return found.fetchone() is not None

    def unsettled(self, key: str) -> tuple[int, float] | None:
        """The latest reservation with this call-store key that has no cost yet (its entry and
        worst case): a call an earlier process sent and never saw answered."""
        found = self._db.execute(
            "SELECT id, worst_usd FROM spend WHERE key = ? AND cost_usd IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (key,),
        ).fetchone()
        return (int(found[0]), float(found[1])) if found else None

    def record(self, key: str, cost_usd: float) -> None:
        """Count a call sent before the ledger kept it (a stored answer, at its real cost)."""
        with sqlite_storage_errors(self.path):
            self._db.execute(
                "INSERT INTO spend (key, worst_usd, cost_usd, created) VALUES (?, ?, ?, ?)",
                (key, cost_usd, cost_usd, time.time()),
            )
            self._db.commit()

    def reserve(self, key: str, worst_usd: float) -> int:
        """Commit a call's worst case before it is sent; returns its entry."""
        with sqlite_storage_errors(self.path):
            cursor = self._db.execute(
                "INSERT INTO spend (key, worst_usd, created) VALUES (?, ?, ?)",
                (key, worst_usd, time.time()),
            )
            self._db.commit()
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def settle(self, entry: int, cost_usd: float) -> None:
        """Set a sent call's real cost."""
        with sqlite_storage_errors(self.path):
            self._db.execute("UPDATE spend SET cost_usd = ? WHERE id = ?", (cost_usd, entry))
            self._db.commit()
