"""`potstill init`: a data file with the user's own column names becomes a config that
`potstill check` passes and `potstill run` runs."""

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from review_task import REVIEWS
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import ConfigError, load_config


def _reviews_csv(folder: Path) -> Path:
    """The twelve short reviews under foreign column names, with an id column."""
    path = folder / "data" / "reviews.csv"
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["review_id", "review_body", "verdict"])
        writer.writeheader()
        for i, (text, label) in enumerate(REVIEWS.items()):
            writer.writerow({"review_id": f"r{i}", "review_body": text, "verdict": label[:3]})
    return path


def _init(*args: str) -> str:
    result = CliRunner().invoke(app, ["init", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_init_guesses_a_classification_file_and_check_passes(tmp_path: Path) -> None:
    data = _reviews_csv(tmp_path)
    out = tmp_path / "reviews.yaml"
    shown = _init(str(data), "--out", str(out))
    assert "review_body" in shown and "Works great" in shown  # columns with a few values
    assert "kind: classification" in shown and "labels: pos 6, neg 6" in shown
    config = load_config(out)
    assert config.task.kind == "classification" and config.task.labels == ["pos", "neg"]
    assert config.dataset.fields == {"text": "review_body", "answer": "verdict", "id": "review_id"}
    assert config.dataset.path == "data/reviews.csv"  # relative to the config
    text = out.read_text()
    assert "# model: {backend: openai" in text and "api_key_env: OPENAI_API_KEY" in text
    assert config.teacher.model.model == "packaged:smollm2-135m-instruct"
    checked = CliRunner().invoke(app, ["check", str(out), "--runs-dir", str(tmp_path / "runs")])
    assert checked.exit_code == 0, checked.output
    assert "split: 10 train, 2 test, 0 dev" in checked.output
    assert "[user] " in checked.output and "style cot" in checked.output
    assert "no problems found" in checked.output
    assert not (tmp_path / "runs").exists()  # check writes nothing


def test_init_refuses_to_overwrite_and_an_unknown_kind(tmp_path: Path) -> None:
    data = _reviews_csv(tmp_path)
    out = tmp_path / "c.yaml"
    out.write_text("mine")
    again = CliRunner().invoke(app, ["init", str(data), "--out", str(out)])
    assert again.exit_code == 2 and "exists already" in again.output and out.read_text() == "mine"
    wrong = CliRunner().invoke(app, ["init", str(data), "--kind", "poetry", "--out", str(out)])
    assert wrong.exit_code == 2 and "--kind must be one of" in wrong.output


def test_a_summarization_file_gets_placeholders_check_refuses_until_filled(tmp_path: Path) -> None:
    # Two columns of similar length: which one is the summary cannot be guessed.
    path = tmp_path / "notes.jsonl"
    rows = [
        {
            "body": f"Meeting {i}: the team agreed to ship release {i} on Friday after the tests.",
            "gist": f"Team will ship release {i} on Friday once the tests have passed, agreed.",
        }
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "notes.yaml"
    shown = _init(str(path), "--kind", "summarization", "--out", str(out))
    assert "replace the <FILL IN" in shown
    with pytest.raises(ConfigError, match="still the placeholder"):
        load_config(out)
    runs = str(tmp_path / "runs")
    refused = CliRunner().invoke(app, ["check", str(out), "--runs-dir", runs])
    assert refused.exit_code == 2
    assert "dataset.fields.answer: still the placeholder" in refused.output
    filled = out.read_text().replace('"<FILL IN: the column of the reference answer>"', "gist")
    out.write_text(filled)
    checked = CliRunner().invoke(app, ["check", str(out), "--runs-dir", runs])
    assert checked.exit_code == 0, checked.output
    assert "[user] Meeting" in checked.output


@pytest.mark.slow
def test_init_check_run_on_a_classification_file(
    tmp_path: Path, tiny_model_dir: Path, fake_teacher: Callable[..., Any]
) -> None:
    """As a new user would: init, check, run, with no edit to the written config. Overrides
    only swap in a teacher that can do the task (the FakeTeacher endpoint, whose good / bad
    are made synonyms of the file's pos / neg), the tiny student and no judge, to keep the
    test short: the packaged teacher is near chance on review sentences."""
    teacher = fake_teacher()
    data = _reviews_csv(tmp_path)
    out = tmp_path / "reviews.yaml"
    _init(str(data), "--out", str(out))
    runs = str(tmp_path / "runs")
    assert CliRunner().invoke(app, ["check", str(out), "--runs-dir", runs]).exit_code == 0
    small = [
        "teacher.model={backend: openai, model: fake-405b, base_url: " + teacher.base_url + "}",
        "task.synonyms={pos: [good], neg: [bad]}",
        f"students.0.base.model={tiny_model_dir}",
        "judge.enabled=false",
        "evaluate.bootstrap_samples=200",
        "evaluate.teacher_zero_shot=false",
    ]
    result = CliRunner().invoke(app, ["run", str(out), *small, "--runs-dir", runs])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "reviews"
    rows = [json.loads(line) for line in (run / "synth" / "train.jsonl").read_text().splitlines()]
    assert rows and {r["completion"][0]["content"] for r in rows} <= {"pos", "neg"}
    assert (run / "report.md").exists()
