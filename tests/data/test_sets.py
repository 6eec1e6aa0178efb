"""Test, dev and transfer sets from sources of their own: a file with its own columns, or a
hub dataset's split (through `datasets.load_dataset` on a local folder, offline)."""

import json
from pathlib import Path

import pytest

from potstill.config import ConfigError, DatasetConfig, SourceConfig, TaskConfig, parse_config
from potstill.data.loading import DatasetError
from potstill.data.sets import describe, load_source, load_split, load_transfer
from potstill.tasks import build_task

MATH = build_task(TaskConfig(kind="math"))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _problems(prefix: str, count: int, question: str = "question") -> list[dict[str, str]]:
    return [
        {"id": f"{prefix}{i}", question: f"{prefix} has {i} apples. How many?", "answer": str(i)}
        for i in range(count)
    ]


def _dataset(**tree: object) -> DatasetConfig:
    return DatasetConfig.model_validate(tree)


def test_a_test_file_of_its_own_leaves_the_whole_main_source_for_training(tmp_path: Path) -> None:
    main = _write(tmp_path / "train.jsonl", _problems("t", 10))
    test = _write(tmp_path / "test.jsonl", _problems("e", 4))
    split = load_split(_dataset(path=str(main), test=str(test)), MATH)
    assert {e.id for e in split.train} == {f"t{i}" for i in range(10)}  # nothing drawn out
    assert [e.id for e in split.test] == ["e0", "e1", "e2", "e3"]  # the file, in its order
    assert split.dev == []
    # Only dev_size left to draw: a seeded dev part of the main source, the rest trains.
    with_dev = load_split(_dataset(path=str(main), test=str(test), dev_size=3), MATH)
    assert len(with_dev.dev) == 3 and len(with_dev.train) == 7
    assert {e.id for e in with_dev.dev} | {e.id for e in with_dev.train} == {
        f"t{i}" for i in range(10)
    }
    # A dev file of its own too: the main source is all training data again.
    dev = _write(tmp_path / "dev.jsonl", _problems("d", 2))
    both = load_split(_dataset(path=str(main), test=str(test), dev={"path": str(dev)}), MATH)
    assert len(both.train) == 10 and [e.id for e in both.dev] == ["d0", "d1"]


def test_a_set_with_other_columns_has_its_own_mapping_else_the_main_one(tmp_path: Path) -> None:
    main = _write(
        tmp_path / "train.jsonl",
        [{"q": "Ann has 3 pens. How many?", "a": "3"}, {"q": "Bo has 4 cups. How many?", "a": "4"}],
    )
    same = _write(tmp_path / "same.jsonl", [{"q": "Cy has 5 hats. How many?", "a": "5"}])
    other = _write(
        tmp_path / "other.jsonl", [{"uid": "r1", "problem": "Count 6 hats.", "solution": "6"}]
    )
    fields = {"question": "q", "answer": "a"}
    inherited = load_split(_dataset(path=str(main), fields=fields, test=str(same)), MATH)
    assert [(e.inputs, e.reference) for e in inherited.test] == [
        ({"question": "Cy has 5 hats. How many?"}, "5")
    ]
    own = {"id": "uid", "question": "problem", "answer": "solution"}
    config = _dataset(path=str(main), fields=fields, test={"path": str(other), "fields": own})
    (example,) = load_split(config, MATH).test
    assert (example.id, example.inputs, example.reference) == (
        "r1",
        {"question": "Count 6 hats."},
        "6",
    )
    # Without its own mapping the other file's columns are not there: the loader says which.
    with pytest.raises(DatasetError, match=r"other.jsonl:1: field 'q' \(the task's 'question'\)"):
        load_split(_dataset(path=str(main), fields=fields, test=str(other)), MATH)


def test_size_draws_a_seeded_sample_of_a_set(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.jsonl", _problems("b", 30))
    main = _dataset(path=str(tmp_path / "train.jsonl"))
    sample = SourceConfig(path=str(path), size=5)
    first, again = load_source(sample, main, MATH), load_source(sample, main, MATH)
    assert len(first) == 5 and [e.id for e in first] == [e.id for e in again]
    moved = load_source(sample, main.model_copy(update={"seed": 1}), MATH)
    assert [e.id for e in moved] != [e.id for e in first]  # dataset.seed draws it
    assert len(load_source(SourceConfig(path=str(path)), main, MATH)) == 30


def test_a_hub_datasets_own_split_through_load_dataset_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.config
    import huggingface_hub.constants

    # No network: `datasets.load_dataset` reads the local folder, as it would a hub name.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    folder = tmp_path / "bench"
    folder.mkdir()
    _write(folder / "train.jsonl", _problems("t", 6))
    _write(folder / "validation.jsonl", _problems("v", 3))
    _write(folder / "test.jsonl", _problems("s", 2))
    config = _dataset(hub=str(folder), test={"hub_split": "validation"})
    split = load_split(config, MATH)
    assert sorted(e.id for e in split.train) == [f"t{i}" for i in range(6)]
    assert [e.id for e in split.test] == ["v0", "v1", "v2"]
    assert describe(config.test, config) == f"hf:{folder} (split validation)"  # type: ignore[arg-type]
    # Transfer sets: the same dataset's test split, and another dataset with its own columns
    # (its `train` split when none is named).
    other = tmp_path / "other"
    other.mkdir()
    _write(other / "train.jsonl", _problems("o", 2, question="problem"))
    run = parse_config(
        {
            "name": "hub",
            "task": {"kind": "math"},
            "dataset": {"hub": str(folder), "test": {"hub_split": "validation"}},
            "evaluate": {
                "transfer": [
                    {"name": "official", "hub_split": "test"},
                    {"name": "other", "hub": str(other), "fields": {"question": "problem"}},
                ]
            },
        },
        "hub.yaml",
    )
    sets = load_transfer(run, MATH)
    assert {name: [e.id for e in s] for name, s in sets.items()} == {
        "official": ["s0", "s1"],
        "other": ["o0", "o1"],
    }


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (
            {"path": "a.jsonl", "test": "b.jsonl", "test_size": 8},
            r"dataset: .*`test_size` draws the test split from the main source at random; "
            r"with `test` given, the test split is that source \(sample it with `test.size`\)",
        ),
        (
            {"path": "a.jsonl", "dev": "b.jsonl", "dev_size": 8},
            r"`dev_size` draws the dev split",
        ),
        ({"path": "a.jsonl", "test": {"hub_split": "validation"}}, r"main source is not a hub"),
        ({"path": "a.jsonl", "test": "a.jsonl"}, r"`test` is the training source itself"),
        ({"hub": "org/x", "test": {"hub_split": "train"}}, r"`test` is the training source"),
        ({"path": "a.jsonl", "test": {"fields": {"question": "q"}}}, r"give `path` \(a file\)"),
        ({"path": "a.jsonl", "test": {"path": "b.csv", "hub_split": "x"}}, r"apply to a hub"),
    ],
)
def test_a_set_that_cannot_mean_what_it_says_is_a_config_error(
    dataset: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"name": "x", "task": {"kind": "math"}, "dataset": dataset}, "x.yaml")


def test_transfer_sets_need_unique_names_and_a_source() -> None:
    base = {"name": "x", "task": {"kind": "math"}, "dataset": {"path": "a.jsonl"}}
    twice = [{"name": "r", "path": "r.jsonl"}, {"name": "r", "path": "s.jsonl"}]
    with pytest.raises(ConfigError, match="set names must be unique"):
        parse_config({**base, "evaluate": {"transfer": twice}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"evaluate.transfer.0: names only a hub split"):
        parse_config(
            {**base, "evaluate": {"transfer": [{"name": "r", "hub_split": "test"}]}}, "x.yaml"
        )
    with pytest.raises(ConfigError, match=r"evaluate.transfer.0.name: '\.\.' is not a folder"):
        parse_config(
            {**base, "evaluate": {"transfer": [{"name": "..", "path": "r.jsonl"}]}}, "x.yaml"
        )


def test_a_bad_set_is_named_by_its_config_key_and_its_own_mapping(tmp_path: Path) -> None:
    main = _write(tmp_path / "train.jsonl", _problems("t", 3))
    other = _write(tmp_path / "other.jsonl", [{"problem": "Count 6 hats.", "solution": "6"}])
    tree = {
        "name": "x",
        "task": {"kind": "math"},
        "dataset": {"path": str(main), "test": {"path": str(other)}},
    }
    # No mapping of its own: the main one (question, answer) finds no question column.
    with pytest.raises(DatasetError, match=r"^dataset.test: .*other.jsonl:1: field 'question'"):
        load_split(parse_config(tree, "x.yaml").dataset, MATH)
    mapping = {"question": "problem", "answer": "solutionn"}
    tree["evaluate"] = {"transfer": [{"name": "r", "path": str(other), "fields": mapping}]}
    tree["dataset"] = {"path": str(main)}
    with pytest.raises(
        DatasetError,
        match=r"^evaluate.transfer.0: .*other.jsonl: evaluate.transfer.0.fields.answer names "
        r"column 'solutionn', which no row has; the columns are \['problem', 'solution'\]",
    ):
        load_transfer(parse_config(tree, "x.yaml"), MATH)
