"""The run folder: every file a run makes, written so that a crash never leaves a torn one."""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import platform
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from potstill.config import ConfigError, RunConfig, load_config
from potstill.errors import UserError, damaged

STAGES = ("synth", "train", "evaluate", "report")


class StageOrderError(UserError, ValueError):
    """A stage asked for before the stage it reads from has finished."""


class RunLocked(UserError, RuntimeError):
    """Another process is writing the run folder."""


class StageFailed(UserError, ValueError):
    """A stage cannot make its output for a reason the user fixes (the message says what);
    it is not recorded as done, so the next run tries it again."""


# mkstemp makes files 0600; finished files get the permissions an ordinary open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)


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
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
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


def package_versions() -> dict[str, str]:
    names = ["potstill", "torch", "transformers", "trl", "peft", "openai", "pydantic"]
    found: dict[str, str] = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class RunFolder:
    """One run's folder (DESIGN.md's `runs/<name>/`) and its manifest."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def calls_db(self) -> Path:
        return self.root / "calls.sqlite"

    @property
    def synth_dir(self) -> Path:
        return self.root / "synth"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def lock_path(self) -> Path:
        return self.root / "run.lock"

    def student_dir(self, name: str) -> Path:
        return self.root / "students" / name

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the run folder's write lock for the block: one process writes a run folder at
        a time; another gets `RunLocked` naming the holder. Re-entrant in one process.

        The folder (and its parents) is made if it is missing, and removed again at the end
        if nothing was written into it (bad input leaves no run folder behind).
        """
        key = self.root.resolve()
        if not is_main_process() or key in _HELD:  # other ranks never write run files
            yield
            return
        made = list(itertools.takewhile(lambda p: not p.exists(), [self.root, *self.root.parents]))
        self.root.mkdir(parents=True, exist_ok=True)  # an OSError here names the folder
        fd = _lock(self.lock_path)
        _HELD[key] = fd
        try:
            yield
        finally:
            del _HELD[key]
            if fd is not None:
                # Removed while still held, so the file exists only while someone holds it
                # (a finished run folder is as the run left it); see `_lock` for the race.
                with suppress(OSError):  # never in place of the error that ended the block
                    self.lock_path.unlink(missing_ok=True)
                os.close(fd)
            with suppress(OSError):
                for folder in made:  # the run folder, then the parents it needed
                    folder.rmdir()  # only if empty

    def load_config(self) -> RunConfig:
        if not self.config_path.exists():
            raise ConfigError(
                f"{self.root}: not a run folder (no config.yaml); start one with "
                "`potstill run CONFIG`"
            )
        return load_config(self.config_path)

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        data = read_json(self.manifest_path)
        if not isinstance(data.get("stages"), dict):
            raise damaged(self.manifest_path, "it has no `stages` record")
        return data

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self.manifest()["stages"].get(stage)
        return record

    def save_config(self, config: RunConfig) -> None:
        """Store the resolved config (it holds no secrets: keys are env-var names only)."""
        text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        # Unchanged files are not rewritten, so a finished run can be re-checked from a
        # read-only copy.
        if not self.config_path.exists() or self.config_path.read_text("utf-8") != text:
            atomic_write_text(self.config_path, text)
        manifest = self.manifest()
        updated = {
            **manifest,
            "config_hash": config.section_hash(*RunConfig.model_fields),
            "versions": package_versions(),
        }
        if updated != manifest:
            write_json(self.manifest_path, updated)

    def set_manifest(self, key: str, value: Any) -> None:
        """Keep `value` under `key` in the manifest (beside the stage records)."""
        write_json(self.manifest_path, {**self.manifest(), key: value})

    def mark_done(self, stage: str, fingerprint: str, seconds: float, **extra: Any) -> None:
        self._mark(stage, "done", fingerprint, seconds, **extra)

    def mark_incomplete(self, stage: str, fingerprint: str, seconds: float, **extra: Any) -> None:
        """Record a stage that must run again (it is never current, so the next run retries)."""
        self._mark(stage, "incomplete", fingerprint, seconds, **extra)

    def _mark(
        self, stage: str, status: str, fingerprint: str, seconds: float, **extra: Any
    ) -> None:
        manifest = self.manifest()
        manifest["stages"][stage] = {
            "status": status,
            "fingerprint": fingerprint,
            "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        write_json(self.manifest_path, manifest)

    def is_current(self, stage: str, fingerprint: str) -> bool:
        record = self.stage_record(stage)
        return bool(record and record["status"] == "done" and record["fingerprint"] == fingerprint)


# Run folders this process holds the write lock of (resolved paths), with the lock's file.
_HELD: dict[Path, int | None] = {}


def _not_in_forked_children() -> None:
    """A forked child (a data loader worker) closes its copy of the lock's file, so it never
    keeps the lock held after its parent died; the parent's copy still holds it."""
    for fd in _HELD.values():
        if fd is not None:
            with suppress(OSError):
                os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_not_in_forked_children)
# A folder that can take no new file cannot be written by anyone: the run goes on unlocked,
# and its first write fails with a message that names that file.
_CANNOT_CREATE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def _lock(path: Path) -> int | None:
    """Take the exclusive `flock` on `path` (made if missing) and write who holds it there.

    The flock is the lock, and the OS drops it when the holder dies, even by SIGKILL, so it
    is never left stuck; the record in the file only tells a refused process who holds it.
    Holders remove the file before they let go, so a lock taken on a file that is no
    longer at `path` is dropped and taken again on the file that is."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        except OSError as exc:
            if exc.errno in _CANNOT_CREATE:
                return None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            folder = path.parent
            raise RunLocked(
                f"{folder}: another potstill process is writing this run folder "
                f"({_holder(path)}); wait until it ends (or stop it), then run the same command "
                "again. Commands that only read it (potstill grade RUN --summary or --export, "
                "potstill check) work meanwhile."
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with suppress(OSError):  # informational only: a full disk must not stop the run here
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    return fd


def _holder(path: Path) -> str:
    """Who holds the lock, as its record says (`pid 12 on host, ...`), or that it is unknown.
    The holder writes the record just after it takes the lock, so it is read a few times."""
    for _ in range(20):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return (
                f"pid {record['pid']} on {record['host']}, `{record['command']}`, "
                f"since {record['started']}"
            )
        except (OSError, ValueError, TypeError, KeyError):
            time.sleep(0.05)
    return f"its record in {path} cannot be read"


def is_main_process() -> bool:
    """False in every process but the first under `accelerate launch` / torchrun, which set
    RANK; only the first writes run files."""
    return os.environ.get("RANK", "0") == "0"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def timed() -> Iterator[list[float]]:
    """Yields a one-item list that holds the elapsed seconds once the block ends."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start
