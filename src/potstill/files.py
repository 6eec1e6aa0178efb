"""Run files written whole or not at all, and JSON / JSONL read back with the damage named.

Every file a stage writes goes through `atomic_write_bytes` (temp file in the same folder,
fsync, rename), so a crash never leaves a torn one; `read_json` / `read_jsonl` read what
these wrote and name the file and line of anything else (`errors.damaged`). Records
(`potstill.records`) and the run folder (`potstill.runs`) are built on these. This module
imports nothing of potstill's but `errors`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from potstill.errors import damaged

# mkstemp makes files 0600; finished files get the permissions an ordinary open() would.
UMASK = os.umask(0)
os.umask(UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: temp file in the same folder, fsync, rename.

    A failure (full disk, read-only folder) leaves the old file as it was and raises an
    OSError that names `path`, not the temp file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)  # an OSError here names the folder
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~UMASK)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    atomic_write_text(path, text)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise damaged(path, f"it is not UTF-8 text (byte {exc.start})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file this package wrote: one JSON object a line. Every such file is
    written whole (`write_jsonl`), so a line that is not one is damage: a DamagedRunFile
    naming the file and line."""
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise damaged(path, f"not a line of JSON ({reason})", number) from None
        if not isinstance(row, dict):
            raise damaged(path, "not a JSON object", number)
        rows.append(row)
    return rows


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object this package wrote (`write_json`); a DamagedRunFile if it is not."""
    try:
        data = json.loads(_read_text(path))
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise damaged(path, f"not JSON ({reason})") from None
    if not isinstance(data, dict):
        raise damaged(path, "not a JSON object")
    return data
