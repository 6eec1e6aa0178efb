import json
from pathlib import Path

import pytest

from potstill.config import DatasetConfig, GeneratorConfig, TaskConfig
from potstill.data.loading import DatasetError, load_examples, split_examples
from potstill.data.stories import make_problems
from potstill.tasks import build_task

MATH = build_task(TaskConfig(kind="math"))


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
        ([{"question": "a", "id": 1}, {"question": "b", "id": 1}], r"d.jsonl:2: duplicate id"),
        ([{"question": "   "}], r"d.jsonl:1: field 'question' is missing or empty"),
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, rows: list[object], message: str
) -> None:
    path = _write(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError, match=message):
        load_examples(DatasetConfig(path=str(path)), MATH)


def test_invalid_json_and_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"question": "ok"}\n{not json}\n')
    with pytest.raises(DatasetError, match=r"d.jsonl:2: not valid JSON"):
        load_examples(DatasetConfig(path=str(path)), MATH)
    path.write_bytes(b'{"question": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"d.jsonl:1: not UTF-8"):
        load_examples(DatasetConfig(path=str(path)), MATH)


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nHow many?,3\n,4\n")
    with pytest.raises(DatasetError, match=r"d.csv:3: field 'question'"):
        load_examples(DatasetConfig(path=str(path)), MATH)


def test_split_is_seeded_and_disjoint() -> None:
    cfg = DatasetConfig(generator=GeneratorConfig(size=50, seed=1), test_size=10, seed=3)
    examples = load_examples(cfg, MATH)
    first, second = split_examples(examples, cfg), split_examples(list(reversed(examples)), cfg)
    assert [e.id for e in first.test] == [e.id for e in second.test]
    assert len(first.test) == 10 and len(first.train) == 40
    assert not {e.id for e in first.test} & {e.id for e in first.train}


def test_generator_answers_match_expressions_and_never_repeat() -> None:
    problems = make_problems(400, seed=7)
    assert len({p["question"] for p in problems}) == 400
    for p in problems:
        assert eval(p["expr"]) == p["answer"]  # the generator's own trusted expressions
    assert {p["op"] for p in problems} == {"add", "sub", "mul", "div"}
    assert make_problems(20, seed=7) == make_problems(20, seed=7)
