"""One of each kind of bad input through the installed `potstill` command, in a subprocess:
exit code 2, one message on stderr naming the file, line or key, no traceback, nothing
written; and a run folder that exists already is left exactly as it was."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lock_holder import holding_run_lock

UNSET_KEY = "POTSTILL_TEST_KEY_NEVER_SET"  # never set; see conftest.py
ROWS = [
    {"id": f"r{i}", "review": text, "label": label}
    for i, (text, label) in enumerate(
        [
            ("Works great.", "positive"),
            ("Broke at once.", "negative"),
            ("Lovely colour.", "positive"),
            ("Too loud.", "negative"),
        ]
    )
]


def config_tree(data: Path, **top: Any) -> dict[str, Any]:
    return {
        "name": "bad-input",
        "task": {"kind": "classification", "labels": ["positive", "negative"]},
        "dataset": {
            "path": str(data),
            "fields": {"text": "review", "answer": "label"},
            "test_size": 1,
        },
        "teacher": {
            "model": {"backend": "openai", "model": "never-called", "api_key_env": UNSET_KEY}
        },
        **top,
    }


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# name -> (the dataset file's name and bytes, a change to the config, overrides, expected)
Case = tuple[tuple[str, bytes] | None, dict[str, Any], list[str], list[str]]
CASES: dict[str, Case] = {
    "config: unknown key": (None, {"teacher": {"modle": 1}}, [], ["teacher.modle: unknown key"]),
    "config: wrong type": (None, {"students": {"name": "x"}}, [], ["students: Input should be"]),
    "config: not a folder name": (None, {"name": ".."}, [], ["name: '..' is not a folder name"]),
    "config: bad override value": (None, {}, ["name=[unclosed"], ["override 'name=[unclosed'"]),
    "config: infinite epochs": (
        None,
        {"students": [{"train": {"epochs": float("inf")}}]},
        [],
        ["students.0.train.epochs: Input should be a finite number"],
    ),
    "data: missing file": (None, {}, [], ["reviews.jsonl: no such dataset file"]),
    "data: empty file": (("reviews.jsonl", b""), {}, [], ["reviews.jsonl: no examples"]),
    "data: invalid UTF-8": (
        ("reviews.jsonl", jsonl(ROWS[:2]) + b'{"id": "x", "review": "caf\xe9"}\n'),
        {},
        [],
        ["reviews.jsonl:3: not UTF-8 text"],
    ),
    "data: a 10 MB line": (
        ("reviews.jsonl", jsonl([*ROWS[:3], {**ROWS[3], "review": "x" * 10_000_000}])),
        {},
        [],
        ["reviews.jsonl:4: field 'review' (the task's 'text') has 10,000,000 characters"],
    ),
    "data: duplicate id": (
        ("reviews.jsonl", jsonl([*ROWS, {**ROWS[3], "review": "Another."}])),
        {},
        [],
        ["reviews.jsonl:5: duplicate id 'r3', first seen at", "reviews.jsonl:4"],
    ),
    "data: label outside the set": (
        ("reviews.jsonl", jsonl([*ROWS[:2], {**ROWS[2], "label": "meh"}])),
        {},
        [],
        ["reviews.jsonl:3: field 'label' (the task's 'answer'): label 'meh' is not in the"],
    ),
    "data: CSV without the review column": (
        ("reviews.csv", b"id,label\nr0,positive\nr1,negative\n"),
        {},
        [],
        ["reviews.csv:2: field 'review' (the task's 'text') is missing"],
    ),
    "data: Parquet that is not Parquet": (
        ("reviews.parquet", b"PAR1 this is not Parquet PAR1"),
        {},
        [],
        ["reviews.parquet: not a readable Parquet file"],
    ),
    "key: the API-key variable is not set": (
        ("reviews.jsonl", jsonl(ROWS)),
        {},
        [],
        [f"teacher.model.api_key_env: the environment variable {UNSET_KEY} is not set"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_through_the_installed_command(
    refused_by_subprocess: Callable[..., str], tmp_path: Path, case: str
) -> None:
    data_file, change, overrides, expect = CASES[case]
    name, content = data_file or ("reviews.jsonl", None)
    data = tmp_path / name
    if content is not None:
        data.write_bytes(content)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(config_tree(data, **change)))
    runs = tmp_path / "runs"
    args = ["run", str(config), *overrides, "--runs-dir", str(runs)]
    refused_by_subprocess(args, runs, [*expect], case)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_a_bad_rerun_leaves_an_existing_run_folder_as_it_was(
    refused_by_subprocess: Callable[..., str], tmp_path: Path
) -> None:
    from potstill.config import load_config
    from potstill.pipeline import open_run, prepare_split

    data = tmp_path / "reviews.jsonl"
    data.write_bytes(jsonl(ROWS))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(config_tree(data)))
    runs = tmp_path / "runs"
    run = open_run(load_config(config), runs)
    prepare_split(run, load_config(config))  # a run whose data is pinned
    before = _snapshot(run.root)
    assert {"config.yaml", "manifest.json", "data/train.jsonl", "data/test.jsonl"} <= set(before)

    # New data with a bad row and a changed split: refused before anything is rewritten.
    data.write_bytes(jsonl([*ROWS, {"id": "r9", "review": "", "label": "positive"}]))
    args = ["run", str(config), "dataset.seed=1", "--runs-dir", str(runs)]
    expect = ["reviews.jsonl:5: field 'review' (the task's 'text') is empty"]
    refused_by_subprocess(args, runs / "elsewhere", expect, "rerun: data")
    # A bad config of the same name; then the same config with the API key missing.
    for extra, expect in (("teacher.prompt.max_tokens=0", "max_tokens"), ("", UNSET_KEY)):
        data.write_bytes(jsonl(ROWS))
        args = ["run", str(config), *([extra] if extra else []), "--runs-dir", str(runs)]
        refused_by_subprocess(args, runs / "elsewhere", [expect], "rerun: config or key")
    # The same config, and the data file edited in place since the split was pinned.
    data.write_bytes(jsonl([*ROWS[:3], {**ROWS[3], "review": "Far too loud."}]))
    args = ["run", str(config), "--runs-dir", str(runs)]
    expect = [f"dataset: {data} changed since the split was pinned", "--refresh"]
    refused_by_subprocess(args, runs / "elsewhere", expect, "rerun: data edited in place")
    # Another process writing the run folder.
    data.write_bytes(jsonl(ROWS))
    with holding_run_lock(run.root) as holder:
        expect = [
            f"{run.root}: another potstill process is writing this run folder",
            f"(pid {holder.pid} on ",
        ]
        refused_by_subprocess(args, runs / "elsewhere", expect, "rerun: another process writing")
    assert _snapshot(run.root) == before
