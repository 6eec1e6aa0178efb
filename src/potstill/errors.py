"""The errors a user can reach, by what the command does about them.

Two bases, and the CLI catches only these (`cli._guard`):

- `UserError`: bad input or a state the user fixes (a config key, a dataset row, a missing
  API key, a damaged run file, a run folder another process writes...). The command prints
  its one-line message and exits with `EXIT_USER` (2). Each module keeps its own subclass
  beside the code that raises it (`config.ConfigError`, `data.loading.DatasetError`, ...),
  and each subclass keeps the builtin base it had (`ValueError`, `RuntimeError`), so code
  that catches those still does.
- `StageIncomplete`: a stage wrote its files but left failed work that a re-run retries;
  the manifest records it as incomplete and the command exits with `EXIT_INCOMPLETE` (3).

The run file errors live here too (`DamagedRunFile`, `damaged`, `sqlite_storage_errors`),
so the low layers (`models`, `grade`) name a damaged or full SQLite file without importing
the run folder (`runs`). This module imports nothing of potstill's.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_USER = 2
EXIT_INCOMPLETE = 3


class UserError(Exception):
    """An error the user fixes; its message says what, and the command exits with code 2."""


class StageIncomplete(RuntimeError):
    """A stage wrote its files, but part of its work failed; a re-run retries that part."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class DamagedRunFile(UserError, ValueError):
    """A file of a run folder that cannot be read back (edited by hand, cut short, disk
    damage); the message names the file (and line) and what to do about it."""


# What to do about a damaged file, by where it is in the run folder.
_STAGE_OF_FOLDER = {"synth": "synth", "eval": "evaluate", "students": "train"}


def _remedy(path: Path) -> str:
    if path.name == "calls.sqlite":
        return (
            "delete it (with any calls.sqlite-wal / -shm beside it) and run the same command "
            "again; the calls stored in it are then sent, and paid for, again"
        )
    if path.name == "grades.sqlite":
        return (
            "restore it from a backup, or delete it to start the grading round anew (the "
            "grades in it are lost)"
        )
    if path.name == "manifest.json":
        return (
            "delete it and run `potstill run` again: every stage runs again, and the answers "
            "stored in calls.sqlite are not paid for again"
        )
    for folder in path.parents:
        root = folder.parent
        if (root / "config.yaml").exists():
            if folder.name in _STAGE_OF_FOLDER:
                return (
                    f"run `potstill {_STAGE_OF_FOLDER[folder.name]} {root}` again to write it "
                    "anew (answers stored in calls.sqlite are not paid for again)"
                )
            if folder.name == "data":
                return (
                    f"delete the folder {folder} and run the same `potstill run` again: the "
                    "split is drawn anew from the dataset, with the same seed"
                )
            break
    return "delete it and run the same command again"


def damaged(path: Path, what: str, line: int | None = None) -> DamagedRunFile:
    """The error for a run file that cannot be read: `path[:line]: what; what to do`."""
    where = f"{path}:{line}" if line is not None else str(path)
    return DamagedRunFile(f"{where}: {what}, so it is damaged; {_remedy(path)}")


# SQLite's storage failures, as the errno a file write would have given.
_SQLITE_ERRNO = {
    "SQLITE_FULL": errno.ENOSPC,
    "SQLITE_READONLY": errno.EROFS,
    "SQLITE_CANTOPEN": errno.EACCES,
    "SQLITE_IOERR": errno.EIO,
}


# SQLite's errors for a file that is not a database, or one whose pages are damaged.
_SQLITE_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


@contextmanager
def sqlite_storage_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's full-disk, read-only and cannot-open errors into OSErrors naming `path`
    (SQLite itself never says which file; it has rolled the failed write back), and a
    damaged database into a DamagedRunFile naming it."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(_SQLITE_DAMAGED):
            raise damaged(path, f"SQLite cannot read it ({exc})") from None
        code = next((c for prefix, c in _SQLITE_ERRNO.items() if name.startswith(prefix)), None)
        if code is None or not isinstance(exc, sqlite3.OperationalError):
            raise
        raise OSError(code, str(exc), str(path)) from exc
