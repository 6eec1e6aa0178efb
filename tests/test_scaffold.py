"""`potstill init`: a data file with the user's own column names becomes a config that
`potstill check` passes and `potstill run` runs."""

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from review_task import REVIEWS
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import ConfigError, load_config


def _reviews_csv(folder: Path, short_labels: bool = True) -> Path:
    """The twelve short reviews under foreign column names, with an id column (and labels
    cut to pos / neg, unless not `short_labels`)."""
    path = folder / "data" / "reviews.csv"
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["review_id", "review_body", "verdict"])
        writer.writeheader()
        for i, (text, label) in enumerate(REVIEWS.items()):
            writer.writerow(
                {
                    "review_id": f"r{i}",
                    "review_body": text,
                    "verdict": label[:3] if short_labels else label,
                }
            )
    return path


def _notes_jsonl(folder: Path) -> Path:
    """Twelve meeting notes with their summaries, in two columns of similar length: which one
    is the summary cannot be guessed."""
    path = folder / "notes.jsonl"
    rows = [
        {
            "body": f"Meeting {i}: the team agreed to ship release {i} on Friday after the tests.",
            "gist": f"Team will ship release {i} on Friday once the tests have passed, agreed.",
        }
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
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
    path = _notes_jsonl(tmp_path)
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


def _init_check_run(config: Path, runs: Path) -> Path:
    """`potstill check` then `potstill run` on the config as written: the packaged model as
    teacher, student and judge, offline. Returns the run folder."""
    checked = CliRunner().invoke(app, ["check", str(config), "--runs-dir", str(runs)])
    assert checked.exit_code == 0, checked.output
    result = CliRunner().invoke(app, ["run", str(config), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    run = runs / load_config(config).name
    assert (run / "report.md").exists() and (run / "report.html").exists()
    return run


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_init_check_run_on_a_classification_file_with_no_edits(tmp_path: Path) -> None:
    """As a new user would: init, check, run, with no edit to the written config and no
    override. The packaged teacher is weak, so only a few rows are kept; the training rows
    hold the file's labels, and every candidate is scored on the held-out examples."""
    data = _reviews_csv(tmp_path, short_labels=False)
    out = tmp_path / "reviews.yaml"
    _init(str(data), "--out", str(out))
    run = _init_check_run(out, tmp_path / "runs")
    rows = _rows(run / "synth" / "train.jsonl")
    assert rows and {r["completion"][0]["content"] for r in rows} <= {"positive", "negative"}
    scores = json.loads((run / "eval" / "scores.json").read_text())
    assert {"teacher", "base_student", "distilled"} <= set(scores["candidates"])


@pytest.mark.slow
def test_init_check_run_on_a_summarization_file_with_the_placeholder_filled(
    tmp_path: Path,
) -> None:
    """A summarization file whose summary column cannot be guessed: init writes a
    placeholder, the user fills it (the only edit), then check and run go through on the
    packaged model, whose plain-text summaries become the training rows."""
    path = _notes_jsonl(tmp_path)
    out = tmp_path / "notes.yaml"
    _init(str(path), "--kind", "summarization", "--out", str(out))
    text = out.read_text()
    assert text.count("<FILL IN") == 1
    out.write_text(text.replace('"<FILL IN: the column of the reference answer>"', "gist"))
    run = _init_check_run(out, tmp_path / "runs")
    kept = _rows(run / "synth" / "train.jsonl")
    assert kept and all(r["completion"][0]["content"].strip() for r in kept)
    scores = json.loads((run / "eval" / "scores.json").read_text())
    assert "rougeL" in json.dumps(scores["candidates"]["distilled"])
