from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from potstill.errors import DamagedRunFile
from potstill.files import atomic_write_text, read_jsonl, write_json
from potstill.runs import RunFolder, RunLocked

if TYPE_CHECKING:
    from conftest import SmallDisk


def test_atomic_write_replaces_whole_files_with_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert os.stat(path).st_mode & 0o044  # readable by others under a usual umask
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temp files left


def test_read_jsonl_names_the_file_and_line_of_damage(tmp_path: Path) -> None:
    # Every JSONL file is written whole, so even a torn last line is damage, not a crash.
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    for text, line, what in (
        ('{"a": 1}\n{"a": 2}\n{"a": ', 3, "not a line of JSON"),
        ('{"a": 1}\n{"a": \n{"a": 3}\n', 2, "not a line of JSON"),
        ('{"a": 1}\n[1]\n', 2, "not a JSON object"),
        ("[" * 100_000 + "]" * 100_000 + "\n", 1, r"not a line of JSON \(nested too deeply\)"),
    ):
        path.write_text(text)
        with pytest.raises(DamagedRunFile, match=rf"^{path}:{line}: {what}.*, so it is damaged"):
            read_jsonl(path)
    path.write_bytes(b'{"a": "caf\xe9"}\n')
    with pytest.raises(DamagedRunFile, match=rf"^{path}: it is not UTF-8 text"):
        read_jsonl(path)


def test_a_full_disk_leaves_the_old_file_whole_and_names_it(small_disk: SmallDisk) -> None:
    path = small_disk.root / "run" / "manifest.json"
    write_json(path, {"stages": {"synth": {"status": "done"}}})
    small_disk.fill()
    with pytest.raises(OSError) as err:
        write_json(path, {"stages": {"synth": {"status": "done"}, "train": {"note": "x" * 9000}}})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert json.loads(path.read_text()) == {"stages": {"synth": {"status": "done"}}}
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temp file left
    small_disk.free()
    write_json(path, {"stages": {}})
    assert json.loads(path.read_text()) == {"stages": {}}


def test_a_read_only_folder_names_the_file_and_changes_nothing(small_disk: SmallDisk) -> None:
    path = small_disk.root / "run" / "report.md"
    atomic_write_text(path, "# old report\n")
    small_disk.read_only()
    for target in (path, small_disk.root / "run" / "plots" / "accuracy.png"):
        with pytest.raises(OSError) as err:
            atomic_write_text(target, "# new report\n")
        assert err.value.errno == errno.EROFS
        assert err.value.filename in (str(target), str(target.parent))
    assert path.read_text() == "# old report\n"


# Holds the run folder's write lock until it is killed.
HOLDER = """
import sys, time
from pathlib import Path
from potstill.runs import RunFolder
with RunFolder(Path(sys.argv[1])).writing():
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_refused_and_a_sigkilled_holder_leaves_no_stuck_lock(
    tmp_path: Path,
) -> None:
    run = RunFolder(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(RunLocked) as refused, run.writing():
            pytest.fail("a second writer got the lock")
        message = str(refused.value)
        assert message.startswith(f"{run.root}: another potstill process is writing")
        assert f"pid {holder.pid} on " in message and "-c" in message and "since 20" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert run.lock_path.exists()  # left behind by the kill, with its record
    with run.writing():  # the OS dropped the lock with the process
        assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
    assert not run.lock_path.exists()  # it exists only while someone holds it


def test_the_lock_is_reentrant_and_leaves_no_folder_it_did_not_fill(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "runs" / "new")
    with pytest.raises(ValueError), run.writing():
        raise ValueError("bad input, found before anything was written")
    assert not run.root.exists()
    with run.writing(), run.writing():  # a stage inside a run takes it again
        atomic_write_text(run.config_path, "name: new\n")
    assert [p.name for p in run.root.iterdir()] == ["config.yaml"]


# Holds the lock, forks a child that lives on (as a data loader worker would), and waits.
FORKING_HOLDER = """
import os, sys, time
from pathlib import Path
from potstill.runs import RunFolder
with RunFolder(Path(sys.argv[1])).writing():
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    print(child, flush=True)
    time.sleep(600)
"""


def test_a_forked_child_does_not_keep_the_lock_after_its_parent_is_killed(
    tmp_path: Path,
) -> None:
    run = RunFolder(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", FORKING_HOLDER, str(run.root)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(RunLocked), run.writing():
            pytest.fail("the lock was free while its holder lived")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        os.kill(child, 0)  # the child is still alive
        with run.writing():
            pass
    finally:
        holder.kill()
        os.kill(child, signal.SIGKILL)
