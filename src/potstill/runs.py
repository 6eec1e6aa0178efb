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
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from potstill.config import ConfigError, RunConfig, load_config
from potstill.errors import UserError
from potstill.files import UMASK, atomic_write_text
from potstill.records import Manifest, StageRecord, read_record, write_record

STAGES = ("synth", "train", "evaluate", "report")


class StageOrderError(UserError, ValueError):
    """A stage asked for before the stage it reads from has finished."""


class RunLocked(UserError, RuntimeError):
    """Another process is writing the run folder."""


class StageFailed(UserError, ValueError):
    """A stage cannot make its output for a reason the user fixes (the message says what);
    it is not recorded as done, so the next run tries it again."""


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

    def manifest(self) -> Manifest:
        """manifest.json, parsed (a damaged or newer one is named in one line); an empty
        one if no stage has run yet."""
        if not self.manifest_path.exists():
            return Manifest(stages={})
        return read_record(self.manifest_path, Manifest)

    def stage_record(self, stage: str) -> StageRecord | None:
        return self.manifest().stages.get(stage)

    def save_config(self, config: RunConfig) -> None:
        """Store the resolved config (it holds no secrets: keys are env-var names only)."""
        text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        # Unchanged files are not rewritten, so a finished run can be re-checked from a
        # read-only copy.
        if not self.config_path.exists() or self.config_path.read_text("utf-8") != text:
            atomic_write_text(self.config_path, text)
        manifest = self.manifest()
        updated = manifest.model_copy(
            update={
                "config_hash": config.section_hash(*RunConfig.model_fields),
                "versions": package_versions(),
            }
        )
        if not self.manifest_path.exists() or updated.dump() != manifest.dump():
            self._save(updated)

    def set_data(self, data: dict[str, Any]) -> None:
        """Keep what the data split was pinned from in the manifest (beside the stage
        records)."""
        self._save(self.manifest().model_copy(update={"data": data}))

    def _save(self, manifest: Manifest) -> None:
        # model_copy(update=...) skips validation: a round trip checks every key.
        write_record(self.manifest_path, Manifest.model_validate(manifest.as_written()))

    def mark_done(self, stage: str, fingerprint: str, seconds: float, **extra: Any) -> None:
        self._mark(stage, "done", fingerprint, seconds, **extra)

    def mark_incomplete(self, stage: str, fingerprint: str, seconds: float, **extra: Any) -> None:
        """Record a stage that must run again (it is never current, so the next run retries)."""
        self._mark(stage, "incomplete", fingerprint, seconds, **extra)

    def _mark(
        self, stage: str, status: str, fingerprint: str, seconds: float, **extra: Any
    ) -> None:
        manifest = self.manifest()
        record = StageRecord(
            status=status,
            fingerprint=fingerprint,
            seconds=round(seconds, 2),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        )
        self._save(manifest.model_copy(update={"stages": {**manifest.stages, stage: record}}))

    def is_done(self, stage: str) -> bool:
        record = self.stage_record(stage)
        return record is not None and record.status == "done"

    def is_current(self, stage: str, fingerprint: str) -> bool:
        record = self.stage_record(stage)
        return record is not None and record.status == "done" and record.fingerprint == fingerprint


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
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
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
