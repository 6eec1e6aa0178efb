from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from potstill.runs import DamagedRunFile, atomic_write_text, read_jsonl, write_json

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
