from pathlib import Path

import pytest

from potstill.config import ConfigError, builtin_config_path, load_config, parse_config

MINIMAL = {"name": "t", "task": {"kind": "math"}, "dataset": {"path": "x.jsonl"}}


def test_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: t\ntask: {kind: math, calculater: true}\ndataset: {path: x.jsonl}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "task.calculater: unknown key" in str(err.value)


def test_overrides_set_nested_and_list_keys() -> None:
    tree = {**MINIMAL, "students": [{"name": "s"}]}
    cfg = parse_config(tree, "t.yaml", ["students.0.train.epochs=3", "teacher.prompt.max_tokens=9"])
    assert cfg.students[0].train.epochs == 3
    assert cfg.teacher.prompt.max_tokens == 9


def test_override_with_bad_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"evaluate.bootstrap_samples"):
        parse_config(dict(MINIMAL), "t.yaml", ["evaluate.bootstrap_samples=lots"])


def test_dataset_needs_exactly_one_source() -> None:
    tree = {**MINIMAL, "dataset": {"path": "a.jsonl", "hub": "org/data"}}
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(tree, "t.yaml")


def test_classification_needs_labels() -> None:
    tree = {**MINIMAL, "task": {"kind": "classification"}}
    with pytest.raises(ConfigError, match="labels"):
        parse_config(tree, "t.yaml")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


SHIPPED = [
    builtin_config_path("demo"),
    *(p for p in sorted(Path("configs").glob("**/*.yaml")) if "accelerate" not in p.parts),
]


def test_every_kind_has_an_example_config() -> None:
    from potstill.tasks import KINDS

    kinds = {load_config(p).task.kind for p in Path("configs/examples").glob("*.yaml")}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p))
def test_every_shipped_config_validates_and_loads_its_data(path: Path) -> None:
    from potstill.data.sets import load_split, load_transfer
    from potstill.pipeline import absolutize, check_worked_examples
    from potstill.tasks import build_task

    config = absolutize(load_config(path), path.parent)
    task = build_task(config.task)  # templates and their variables are checked here
    split = load_split(config.dataset, task)
    if config.dataset.test is None:
        assert len(split.test) == config.dataset.test_size
    assert split.train and any(e.reference is not None for e in split.test)
    transfer = load_transfer(config, task)
    assert all(any(e.reference is not None for e in s) for s in transfer.values())
    check_worked_examples(config, split.test, transfer)  # no shot repeats what is scored
    for prompt in (config.teacher.prompt, config.synth.prompt):
        assert task.messages(split.test[0].inputs, prompt)[-1]["role"] == "user"


def test_the_configs_in_docs_tasks_md_validate() -> None:
    import re

    import yaml

    from potstill.tasks import build_task

    text = Path("docs/tasks.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    full = [b for b in blocks if "name" in b]
    assert full, "docs/tasks.md has no complete config"
    for tree in full:
        build_task(parse_config(tree, "docs/tasks.md").task)
    for tree in blocks:  # fragments: the task section with a minimal rest
        if "task" in tree and "name" not in tree:
            build_task(parse_config({**MINIMAL, **tree}, "docs/tasks.md").task)
    # The dataset and evaluation fragments (test and transfer sets) validate too.
    fragments = [b for b in blocks if "name" not in b and {"dataset", "evaluate"} & set(b)]
    assert any("transfer" in b.get("evaluate", {}) for b in fragments)
    for tree in fragments:
        parse_config({**MINIMAL, **tree}, "docs/tasks.md")


def test_a_key_written_into_the_config_is_refused_and_not_repeated(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    secret = "sk-potstill-sentinel-in-yaml"
    path.write_text(
        "name: t\ntask: {kind: math}\ndataset: {path: x.jsonl}\n"
        f"teacher: {{model: {{backend: openai, model: m, api_key: {secret}}}}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "teacher.model.api_key: unknown key" in str(err.value)
    assert secret not in str(err.value)


def test_several_samples_need_a_temperature_and_a_budget_needs_a_price() -> None:
    with pytest.raises(ConfigError, match=r"teacher\.prompt\.temperature"):
        parse_config({**MINIMAL, "synth": {"samples": 3}}, "t.yaml")
    sampled = {**MINIMAL, "synth": {"samples": 3}, "teacher": {"prompt": {"temperature": 0.7}}}
    assert parse_config(sampled, "t.yaml").synth.samples == 3
    with pytest.raises(ConfigError, match=r"teacher\.model\.price_per_million_input"):
        parse_config(
            {**MINIMAL, "teacher": {"model": {"model": "gpt-x"}}, "budget": {"max_usd": 5}},
            "t.yaml",
        )
    price = {"price_per_million_input": 2.5, "price_per_million_output": 10}
    priced = {
        **MINIMAL,
        "teacher": {"model": {"model": "gpt-x", **price}},
        "budget": {"max_usd": 5},
    }
    assert parse_config(priced, "t.yaml").teacher.model.price_per_million_output == 10


@pytest.mark.parametrize(
    ("tree", "line"),
    [
        (
            {"dataset": {"path": "d.jsonl", "tset_size": 3}},
            "dataset.tset_size: unknown key; did you mean `test_size`?",
        ),
        (
            {"students": [{"name": "s", "train": {"epoch": 2}}]},
            "students.0.train.epoch: unknown key; did you mean `epochs`?",
        ),
        (
            {"teacher": {"model": {"base_ur": "http://x"}}},
            "teacher.model.base_ur: unknown key; did you mean `base_url`?",
        ),
        ({"zzz": 1}, "zzz: unknown key"),
    ],
)
def test_an_unknown_key_suggests_the_nearest_valid_one(tree: dict, line: str) -> None:  # type: ignore[type-arg]
    base = {"name": "x", "task": {"kind": "math"}, "dataset": {"path": "d.jsonl"}}
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, **tree}, "c.yaml")
    assert f"  {line}" in str(caught.value).splitlines()


def test_a_bad_override_names_the_command_line() -> None:
    base = {"name": "x", "task": {"kind": "math"}, "dataset": {"path": "d.jsonl"}}
    with pytest.raises(
        ConfigError,
        match=r"test_size: .* \(from the command-line override "
        r"'dataset.test_size=abc'\)",
    ):
        parse_config(base, "c.yaml", ["dataset.test_size=abc"])
