"""grades.sqlite: the sampled examples, the grading tasks, graders, their forms and grades.

SQLite in WAL mode with a busy timeout; every write is one short `BEGIN IMMEDIATE`
transaction, so the web app's threads and a CLI call can share the file. Tokens are stored
only as SHA-256 hashes: a link that is lost is replaced (`--add-grader NAME` again), not read
back.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from potstill.errors import sqlite_storage_errors

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  example_id TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, stratum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
  task_id TEXT PRIMARY KEY,
  mode TEXT NOT NULL CHECK (mode IN ('pointwise', 'pairwise')),
  example_id TEXT NOT NULL REFERENCES items (example_id),
  candidate TEXT NOT NULL,
  opponent TEXT);
CREATE TABLE IF NOT EXISTS graders (
  grader_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
  token_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
  grader_id INTEGER NOT NULL REFERENCES graders (grader_id),
  example_id TEXT NOT NULL REFERENCES items (example_id),
  PRIMARY KEY (grader_id, example_id));
CREATE TABLE IF NOT EXISTS forms (
  nonce TEXT PRIMARY KEY,
  grader_id INTEGER NOT NULL REFERENCES graders (grader_id),
  task_id TEXT NOT NULL REFERENCES tasks (task_id),
  shown_left TEXT,
  issued_at REAL NOT NULL,
  used_at REAL);
CREATE TABLE IF NOT EXISTS grades (
  grade_id INTEGER PRIMARY KEY,
  grader_id INTEGER NOT NULL REFERENCES graders (grader_id),
  task_id TEXT NOT NULL REFERENCES tasks (task_id),
  shown_left TEXT,
  verdict TEXT CHECK (verdict IS NULL OR verdict IN ('win', 'tie', 'loss')),
  comment TEXT NOT NULL,
  seconds REAL NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (grader_id, task_id));
CREATE TABLE IF NOT EXISTS criterion_scores (
  grade_id INTEGER NOT NULL REFERENCES grades (grade_id),
  criterion TEXT NOT NULL,
  score INTEGER NOT NULL,
  PRIMARY KEY (grade_id, criterion));
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Grader:
    grader_id: int
    name: str


@dataclass(frozen=True)
class GradingTask:
    """One page a grader fills in: a candidate's answer (pointwise) or it beside the
    opponent's (pairwise), for one example. `task_id` is random, so it says nothing about
    which candidate is shown."""

    task_id: str
    mode: str
    example_id: str
    candidate: str
    opponent: str | None


@dataclass(frozen=True)
class Form:
    nonce: str
    grader_id: int
    task_id: str
    shown_left: str | None
    issued_at: float
    used_at: float | None


class AlreadyGraded(Exception):
    """The grader has a grade for this task already, or the form was used."""


class GradeStore:
    """Short-lived connections per call, so threads never share one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            for key in ("csrf_secret", "admin_token_hash"):
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    (key, secrets.token_hex(32) if key == "csrf_secret" else ""),
                )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with sqlite_storage_errors(self.path):
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                db.execute("PRAGMA busy_timeout=10000")
                db.execute("PRAGMA foreign_keys=ON")
                yield db
            finally:
                db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- the sample -------------------------------------------------------------------

    def sample(self) -> list[str]:
        """The sampled example ids in sample order (overlap first); empty before sampling."""
        with self._connect() as db:
            rows = db.execute("SELECT example_id FROM items ORDER BY position").fetchall()
        return [str(r[0]) for r in rows]

    def save_sample(
        self,
        items: Sequence[tuple[str, str]],
        tasks: Sequence[tuple[str, str, str, str | None]],
        settings: str,
    ) -> None:
        """Pin the sample once: (example id, stratum) in order, and (mode, example id,
        candidate, opponent) per task."""
        with self._write() as db:
            if db.execute("SELECT COUNT(*) FROM items").fetchone()[0]:
                raise RuntimeError("the grading sample is already drawn")
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?)",
                [(e, i, s) for i, (e, s) in enumerate(items)],
            )
            db.executemany(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?)",
                [(secrets.token_hex(8), *task) for task in tasks],
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('sample_settings', ?)", (settings,))

    def strata(self) -> dict[str, str]:
        with self._connect() as db:
            return {str(e): str(s) for e, s in db.execute("SELECT example_id, stratum FROM items")}

    def tasks(self) -> dict[str, GradingTask]:
        with self._connect() as db:
            rows = db.execute("SELECT task_id, mode, example_id, candidate, opponent FROM tasks")
            return {r[0]: GradingTask(*r) for r in rows}

    # -- graders and tokens -------------------------------------------------------------

    def graders(self) -> list[Grader]:
        with self._connect() as db:
            rows = db.execute("SELECT grader_id, name FROM graders ORDER BY grader_id")
            return [Grader(int(i), str(n)) for i, n in rows]

    def assignment_load(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT example_id, COUNT(*) FROM assignments GROUP BY example_id")
            return {str(e): int(n) for e, n in rows}

    def add_grader(self, name: str, examples: Sequence[str]) -> tuple[str, bool]:
        """Create a grader with these examples, or give an existing one a new token (the old
        link stops working, grades and assignments stay). Returns (token, created)."""
        token = new_token()
        with self._write() as db:
            row = db.execute("SELECT grader_id FROM graders WHERE name = ?", (name,)).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE graders SET token_hash = ? WHERE grader_id = ?",
                    (token_hash(token), row[0]),
                )
                return token, False
            cursor = db.execute(
                "INSERT INTO graders (name, token_hash, created_at) VALUES (?, ?, ?)",
                (name, token_hash(token), _now_iso()),
            )
            db.executemany(
                "INSERT INTO assignments VALUES (?, ?)",
                [(cursor.lastrowid, example_id) for example_id in examples],
            )
        return token, True

    def grader_for(self, token: str) -> Grader | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT grader_id, name FROM graders WHERE token_hash = ?", (token_hash(token),)
            ).fetchone()
        return None if row is None else Grader(int(row[0]), str(row[1]))

    def new_admin_token(self) -> str:
        """A fresh admin token; the previous admin link stops working."""
        token = new_token()
        self.set_meta("admin_token_hash", token_hash(token))
        return token

    def is_admin(self, token: str) -> bool:
        stored = self.meta("admin_token_hash")
        return bool(stored) and secrets.compare_digest(stored or "", token_hash(token))

    # -- what a grader sees ------------------------------------------------------------

    def assigned_tasks(self, grader_id: int) -> list[GradingTask]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT t.task_id, t.mode, t.example_id, t.candidate, t.opponent FROM tasks t "
                "JOIN assignments a ON a.example_id = t.example_id WHERE a.grader_id = ?",
                (grader_id,),
            )
            return [GradingTask(*r) for r in rows]

    def is_assigned(self, grader_id: int, task_id: str) -> bool:
        with self._connect() as db:
            row = db.execute(
                "SELECT 1 FROM tasks t JOIN assignments a ON a.example_id = t.example_id "
                "WHERE a.grader_id = ? AND t.task_id = ?",
                (grader_id, task_id),
            ).fetchone()
        return row is not None

    def graded_task_ids(self, grader_id: int) -> set[str]:
        with self._connect() as db:
            rows = db.execute("SELECT task_id FROM grades WHERE grader_id = ?", (grader_id,))
            return {str(r[0]) for r in rows}

    def issue_form(self, grader_id: int, task_id: str, shown_left: str | None) -> str:
        """A one-time nonce for one rendered form; a second submission with it is refused."""
        nonce = secrets.token_urlsafe(18)
        with self._write() as db:
            db.execute(
                "INSERT INTO forms VALUES (?, ?, ?, ?, ?, NULL)",
                (nonce, grader_id, task_id, shown_left, time.time()),
            )
        return nonce

    def form(self, nonce: str) -> Form | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM forms WHERE nonce = ?", (nonce,)).fetchone()
        return None if row is None else Form(*row)

    def record_grade(
        self,
        form: Form,
        verdict: str | None,
        scores: dict[str, int],
        comment: str,
    ) -> int:
        """Write one grade and use up its form, in one transaction; raises AlreadyGraded
        (nothing written) when the form was used or the task already has this grader's grade."""
        now = time.time()
        with self._write() as db:
            used = db.execute(
                "UPDATE forms SET used_at = ? WHERE nonce = ? AND used_at IS NULL",
                (now, form.nonce),
            ).rowcount
            if used != 1:
                raise AlreadyGraded("this form was already submitted")
            try:
                cursor = db.execute(
                    "INSERT INTO grades (grader_id, task_id, shown_left, verdict, comment, "
                    "seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        form.grader_id,
                        form.task_id,
                        form.shown_left,
                        verdict,
                        comment,
                        round(now - form.issued_at, 3),
                        _now_iso(),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyGraded("you have already graded this item") from None
            grade_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO criterion_scores VALUES (?, ?, ?)",
                [(grade_id, name, value) for name, value in scores.items()],
            )
        return grade_id

    # -- reading grades back -------------------------------------------------------------

    def grades(self) -> list[dict[str, Any]]:
        """Every grade with its grader, example, candidate, time and criterion scores."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT g.grade_id, r.name AS grader, t.mode, t.example_id, t.candidate, "
                "t.opponent, g.shown_left, g.verdict, g.comment, g.seconds, g.created_at "
                "FROM grades g JOIN graders r USING (grader_id) JOIN tasks t USING (task_id) "
                "ORDER BY g.grade_id"
            ).fetchall()
            scores: dict[int, dict[str, int]] = {}
            for grade_id, criterion, score in db.execute(
                "SELECT grade_id, criterion, score FROM criterion_scores ORDER BY rowid"
            ):
                scores.setdefault(int(grade_id), {})[str(criterion)] = int(score)
        return [{**dict(r), "scores": scores.get(int(r["grade_id"]), {})} for r in rows]

    def progress(self) -> list[dict[str, Any]]:
        """Per grader: tasks assigned and tasks graded."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT r.name, "
                "(SELECT COUNT(*) FROM tasks t JOIN assignments a USING (example_id) "
                " WHERE a.grader_id = r.grader_id), "
                "(SELECT COUNT(*) FROM grades g WHERE g.grader_id = r.grader_id) "
                "FROM graders r ORDER BY r.grader_id"
            ).fetchall()
        return [{"grader": str(n), "total": int(t), "done": int(d)} for n, t, d in rows]
