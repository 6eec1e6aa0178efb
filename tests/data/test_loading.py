import json
from pathlib import Path

import pytest

from potstill.config import DatasetConfig, GeneratorConfig, TaskConfig
from potstill.data.loading import DatasetError, load_examples, split_examples
from potstill.data.stories import make_problems
from potstill.tasks import build_task

MATH = build_task(TaskConfig(kind="math"))
SENTIMENT = build_task(TaskConfig(kind="classification", labels=["positive", "negative"]))
CHOICE = build_task(TaskConfig(kind="multiple_choice"))
CHAT = build_task(TaskConfig(kind="conversation"))


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_with_field_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"q": "1+1?", "a": "2", "key": "x"}])
    cfg = DatasetConfig(path=str(path), fields={"question": "q", "answer": "a", "id": "key"})
    (example,) = load_examples(cfg, MATH)
    assert (example.id, example.inputs, example.reference) == ("x", {"question": "1+1?"}, "2")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question": "q"}, {"answer": "1"}], r"d.jsonl:2: field 'question' is missing"),
        ([{"question": "q", "answer": "many"}], r"d.jsonl:1: field 'answer': 'many' is not a"),
        ([{"question": "a", "id": 1}, {"question": "b", "id": 1}], r"d.jsonl:2: duplicate id '1'"),
        ([{"question": "   "}], r"d.jsonl:1: field 'question' is empty"),
        ([{"question": "same"}, {"question": "same"}], r"d.jsonl:2: duplicate input .*d.jsonl:1"),
        ([{"question": "q", "id": ""}], r"d.jsonl:1: field 'id' is empty"),
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, rows: list[object], message: str
) -> None:
    path = _write(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError, match=message):
        load_examples(DatasetConfig(path=str(path)), MATH)


def test_mapped_column_is_named_with_the_tasks_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"review": "fine", "label": "meh"}])
    cfg = DatasetConfig(path=str(path), fields={"text": "review", "answer": "label"})
    with pytest.raises(DatasetError, match=r"d.jsonl:1: field 'label' \(the task's 'answer'\): "):
        load_examples(cfg, SENTIMENT)


def test_label_outside_the_label_set_and_a_synonym_reference(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"text": "ok", "answer": "neutral"}])
    with pytest.raises(DatasetError, match=r"d.jsonl:1: field 'answer': label 'neutral' is not"):
        load_examples(DatasetConfig(path=str(path)), SENTIMENT)
    nli = build_task(TaskConfig(kind="classification", preset="nli"))
    path = _write(tmp_path / "n.jsonl", [{"premise": "p", "hypothesis": "h", "answer": "True"}])
    (example,) = load_examples(DatasetConfig(path=str(path)), nli)
    assert example.reference == "entailment"  # the synonym is stored as the label itself


def test_unknown_field_in_the_mapping_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"question": "q"}])
    with pytest.raises(DatasetError, match=r"dataset.fields: \['qestion'\] not fields"):
        load_examples(DatasetConfig(path=str(path), fields={"qestion": "q"}), MATH)


def test_invalid_json_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"question": "ok"}\n{not json}\n')
    with pytest.raises(DatasetError, match=r"d.jsonl:2: not valid JSON"):
        load_examples(DatasetConfig(path=str(path)), MATH)
    path.write_bytes(b'{"question": "fine"}\n{"question": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"d.jsonl:2: not UTF-8 text"):
        load_examples(DatasetConfig(path=str(path)), MATH)
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes("question\nfine\nna\xefve\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"d.csv:3: not UTF-8 text"):
        load_examples(DatasetConfig(path=str(csv_path)), MATH)


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("question,answer\nHow many?,3\n".encode("utf-8-sig"))
    (example,) = load_examples(DatasetConfig(path=str(path)), MATH)
    assert example.inputs == {"question": "How many?"}


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "d.jsonl", [{"question": "q"}])

    # CI runs as root, which reads a file whatever its mode: the refusal is simulated.
    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(DatasetError, match=r"d.jsonl: cannot read the file \(Permission denied"):
        load_examples(DatasetConfig(path=str(path)), MATH)


def test_unreadable_paths(tmp_path: Path) -> None:
    folder = tmp_path / "d.jsonl"
    folder.mkdir()
    with pytest.raises(DatasetError, match=r"d.jsonl: is a folder"):
        load_examples(DatasetConfig(path=str(folder)), MATH)
    with pytest.raises(DatasetError, match=r"absent.csv: no such dataset file"):
        load_examples(DatasetConfig(path=str(tmp_path / "absent.csv")), MATH)
    broken = tmp_path / "d.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"d.parquet: not a readable Parquet file"):
        load_examples(DatasetConfig(path=str(broken)), MATH)


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('question,answer\nHow many?,3\n"Two\nlines",4\n,5\n')
    with pytest.raises(DatasetError, match=r"d.csv:5: field 'question' is empty"):
        load_examples(DatasetConfig(path=str(path)), MATH)


def test_parquet_and_the_hub_code_path_on_local_files(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = [
        {"q": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "key": "Paris"},
        {"q": "2 + 2?", "choices": ["3", "4"], "key": "b"},
    ]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "mc.parquet"))
    fields = {"question": "q", "options": "choices", "answer": "key"}
    parquet = DatasetConfig(path=str(tmp_path / "mc.parquet"), fields=fields)
    from_file = load_examples(parquet, CHOICE)
    assert [e.reference for e in from_file] == ["A", "B"]  # option text and "b" become letters
    assert json.loads(from_file[0].inputs["options"]) == ["Paris", "Rome", "Oslo"]
    # `datasets.load_dataset` on a local folder: the same code path as a hub name.
    folder = tmp_path / "hub"
    folder.mkdir()
    Dataset.from_list(rows).to_json(str(folder / "train.jsonl"))
    from_hub = load_examples(DatasetConfig(hub=str(folder), fields=fields), CHOICE)
    assert [e.inputs for e in from_hub] == [e.inputs for e in from_file]


def test_option_columns_are_gathered_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "mc.csv"
    path.write_text("q,A,B,C,D,key\nPick one,x,y,,,B\nOnly one,x,,,,A\n")
    fields = {"question": "q", "options": ["A", "B", "C", "D"], "answer": "key"}
    with pytest.raises(DatasetError, match=r"mc.csv:3: field \['A', 'B', 'C', 'D'\].*got 1"):
        load_examples(DatasetConfig(path=str(path), fields=fields), CHOICE)
    path.write_text("q,A,B,C,D,key\nPick one,x,y,,,E\n")
    with pytest.raises(DatasetError, match=r"mc.csv:2: field 'key'.*'E' is not a letter A-B"):
        load_examples(DatasetConfig(path=str(path), fields=fields), CHOICE)


def test_conversation_history_is_optional_and_checked(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    path = _write(
        tmp_path / "c.jsonl",
        [{"message": "How are you?", "history": turns}, {"message": "Plain question"}],
    )
    first, second = load_examples(DatasetConfig(path=str(path)), CHAT)
    assert json.loads(first.inputs["history"]) == turns and "history" not in second.inputs
    assert first.reference is None
    _write(path, [{"message": "x", "history": [{"role": "robot", "content": "beep"}]}])
    with pytest.raises(DatasetError, match=r"c.jsonl:1: field 'history': turn 1 needs a role"):
        load_examples(DatasetConfig(path=str(path)), CHAT)


def test_hub_reference_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError) as err:
        load_examples(DatasetConfig(path="hf:org/name"), MATH)
    message = str(err.value)
    assert message.startswith("hf:org/name: cannot load this dataset") and "\n" not in message
    assert "dataset.path" in message


def test_split_is_seeded_disjoint_and_has_an_optional_dev_part() -> None:
    cfg = DatasetConfig(generator=GeneratorConfig(size=50, seed=1), test_size=10, seed=3)
    examples = load_examples(cfg, MATH)
    first, second = split_examples(examples, cfg), split_examples(list(reversed(examples)), cfg)
    assert [e.id for e in first.test] == [e.id for e in second.test]
    assert len(first.test) == 10 and len(first.train) == 40 and first.dev == []
    assert not {e.id for e in first.test} & {e.id for e in first.train}
    with_dev = split_examples(examples, cfg.model_copy(update={"dev_size": 5}))
    assert [e.id for e in with_dev.test] == [e.id for e in first.test]
    assert len(with_dev.dev) == 5 and len(with_dev.train) == 35
    parts = [{e.id for e in p} for p in (with_dev.train, with_dev.dev, with_dev.test)]
    assert len(set().union(*parts)) == 50
    with pytest.raises(DatasetError, match="leaves no training examples"):
        split_examples(examples, cfg.model_copy(update={"dev_size": 40}))


def test_generator_answers_match_expressions_and_never_repeat() -> None:
    problems = make_problems(400, seed=7)
    assert len({p["question"] for p in problems}) == 400
    for p in problems:
        assert eval(p["expr"]) == p["answer"]  # the generator's own trusted expressions
    assert {p["op"] for p in problems} == {"add", "sub", "mul", "div"}
    assert make_problems(20, seed=7) == make_problems(20, seed=7)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"answer": "label"}, r"dataset.fields.answer names column 'label'"),
        ({"id": "ticket"}, r"dataset.fields.id names column 'ticket'"),
    ],
)
def test_a_mapped_column_that_no_row_has_is_an_error(
    tmp_path: Path, fields: dict[str, str], named: str
) -> None:
    """A reference column mapped to nothing would leave every reference null and accuracy out
    of the report without a word."""
    path = _write(tmp_path / "d.jsonl", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?"}])
    with pytest.raises(
        DatasetError,
        match=rf"d.jsonl: {named}, which no row has; the columns "
        r"are \['question', 'answer'\]",
    ):
        load_examples(DatasetConfig(path=str(path), fields=fields), MATH)


def test_optional_columns_mapped_to_nothing_are_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"message": "Hi", "answer": "Hello"}])
    cfg = DatasetConfig(path=str(path), fields={"history": ["turn_1", "turn_2"]})
    with pytest.raises(DatasetError, match=r"dataset.fields.history names columns \['turn_1'"):
        load_examples(cfg, CHAT)


def test_rows_without_a_reference_beside_rows_with_one_still_load(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"q": "1+1?", "a": "2"}, {"q": "2+2?"}])
    cfg = DatasetConfig(path=str(path), fields={"question": "q", "answer": "a"})
    assert [e.reference for e in load_examples(cfg, MATH)] == ["2", None]
