import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import parse_config
from potstill.runs import RunFolder
from potstill.synth.phases import sample_requests
from potstill.synth.stage import rejection_reason, training_row
from potstill.tasks import Example, build_task

CONFIG = parse_config(
    {
        "name": "t",
        "task": {"kind": "math", "calculator": True},
        "dataset": {"path": "x.jsonl"},
        "synth": {"prompt": {"style": "zero_shot"}},
    },
    "t.yaml",
)
TASK = build_task(CONFIG.task)
EXAMPLE = Example("e1", {"question": "Tom has 22 stickers and gives away 9."}, "13")


def _reason(
    reply: str, finish: str = "stop", error: str | None = None, config=CONFIG
) -> str | None:  # type: ignore[no-untyped-def]
    return rejection_reason(TASK.parse(reply, "cot"), finish, error, EXAMPLE, TASK, config)


def test_rejection_reasons() -> None:
    assert _reason('{"reason": "gives away", "answer": "22 - 9"}') is None
    assert _reason('{"reason": "adds", "answer": "22 + 9"}') == "disagrees_with_reference"
    assert _reason('{"reason": "adds", "answer": ') == "malformed"
    assert _reason("no idea") == "no_answer"
    assert _reason('{"answer": "22 - 9"}', finish="length") == "finish_length"
    assert _reason("", error="boom") == "call_failed"


def test_reference_check_can_be_switched_off_and_rationale_required() -> None:
    lenient = CONFIG.model_copy(
        update={"synth": CONFIG.synth.model_copy(update={"require_reference_match": False})}
    )
    assert _reason('{"reason": "adds", "answer": "22 + 9"}', config=lenient) is None
    rationale = CONFIG.model_copy(
        update={"synth": CONFIG.synth.model_copy(update={"target": "rationale_answer"})}
    )
    assert _reason('{"answer": "22 - 9"}', config=rationale) == "no_rationale"


def test_training_row_keeps_the_teachers_expression_and_drops_the_reason() -> None:
    parsed = TASK.parse('{"reason": "gives away, so subtract", "answer": "22 - 9"}', "cot")
    row = training_row(TASK, CONFIG, EXAMPLE, parsed)
    assert row["completion"] == [{"role": "assistant", "content": "22 - 9"}]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["prompt"][-1]["content"] == EXAMPLE.inputs["question"]
    with_reason = CONFIG.model_copy(
        update={"synth": CONFIG.synth.model_copy(update={"target": "rationale_answer"})}
    )
    content = training_row(TASK, with_reason, EXAMPLE, parsed)["completion"][0]["content"]
    assert TASK.parse(content, "cot").rationale == "gives away, so subtract"


@pytest.mark.parametrize(
    ("task", "inputs", "reply", "target"),
    [
        (
            {
                "kind": "classification",
                "labels": ["billing", "shipping"],
                "synonyms": {"billing": ["payment"]},
            },
            {"text": "Charged twice."},
            '{"reason": "money", "answer": "Payment"}',
            "billing",
        ),
        (
            {"kind": "multiple_choice"},
            {"question": "Capital of France?", "options": "A) Rome\nB) Paris"},
            '{"reason": "known", "answer": "B) Paris"}',
            "B",
        ),
        ({"kind": "math"}, {"question": "Price?"}, '{"reason": "sum", "answer": "$1,200"}', "1200"),
    ],
)
def test_training_rows_hold_the_canonical_answer_not_the_teachers_spelling(
    task: dict[str, Any], inputs: dict[str, str], reply: str, target: str
) -> None:
    """A student trained on the teacher's synonym would serve the synonym, not the label."""
    config = parse_config(
        {
            "name": "t",
            "task": task,
            "dataset": {"path": "x.jsonl"},
            "synth": {"prompt": {"style": "zero_shot"}},
        },
        "t.yaml",
    )
    built = build_task(config.task)
    parsed = built.parse(reply, "cot", inputs)
    assert parsed.ok and parsed.raw_answer != target
    row = training_row(built, config, Example("e", inputs, None), parsed)
    assert row["completion"] == [{"role": "assistant", "content": target}]


# The whole stage against the review teacher over real HTTP (tests/conftest.py).


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_votes_new_inputs_and_a_card_that_accounts_for_every_row(
    fake_teacher: Callable[..., Any], review_run: Callable[..., RunFolder]
) -> None:
    teacher = fake_teacher()
    run = review_run(
        teacher.url,
        synth={"samples": 3, "generate": {"per_seed": 2, "seeds": 3}},
        model={"price_per_million_input": 3.0, "price_per_million_output": 15.0},
    )
    result = _invoke("synth", str(run.root))
    assert result.exit_code == 0, result.output
    records = _jsonl(run.synth_dir / "teacher.jsonl")
    contract = {"id", "inputs", "reference", "reply", "status", "answer", "raw_answer"}
    contract |= {"rationale", "finish_reason", "error", "completion_tokens", "rejected"}
    assert all(contract <= set(r) for r in records)
    train = [r for r in records if r["origin"] == "train"]
    generated = [r for r in records if r["origin"] == "generated"]
    assert len(train) == 20 and len(generated) == 6
    assert all(r["seed_id"] in {t["id"] for t in train[:3]} for r in generated)
    split = [r for r in records if len(r["votes"]) == 2]  # the second sample disagreed
    assert split and all(r["votes"][r["answer"]] == 2 for r in split)
    assert all(r["answer"] == r["reference"] for r in train)  # the vote is right every time
    for r in records:  # the kept reply agrees with the vote and its rationale goes with it
        chosen = r["samples"][r["chosen_sample"]]
        assert chosen["answer"] == r["answer"] and chosen["reply"] == r["reply"]
        assert r["rationale"] in r["reply"]
    rows = _jsonl(run.synth_dir / "train.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in records if r["rejected"] is None]
    summary = json.loads((run.synth_dir / "summary.json").read_text())
    assert summary["teacher_accuracy_on_train"] == 1.0 and summary["generated_inputs"] == 6
    assert summary["calls"] == 6 + 26 * 3 == len(teacher.answered)
    expected_cost = sum(r["cost_usd"] for r in records) + sum(  # labelling + writing inputs
        (3.0 * p + 15.0 * c) / 1e6
        for p, c in teacher.usage_of(lambda body: "You write new inputs" in str(body))
    )
    assert abs(summary["cost_usd"] - expected_cost) < 1e-6 and summary["cost_usd"] > 0
    manifest = json.loads(run.manifest_path.read_text())
    assert manifest["stages"]["synth"]["cost_usd"] == summary["cost_usd"]
    card = (run.synth_dir / "card.md").read_text()
    assert "| accepted | 26 | 100.0% |" in card and "majority vote" in card
    assert f"teacher cost: ${summary['cost_usd']:.4f}" in card
    assert "## Synthetic inputs" in card


def test_failed_calls_go_to_errors_jsonl_exit_3_and_are_retried_next_run(
    fake_teacher: Callable[..., Any], review_run: Callable[..., RunFolder]
) -> None:
    broken: set[str] = set()

    def faults(key: str, attempt: int) -> str | None:
        return "500" if key in broken else ("400" if key in refused else None)

    refused: set[str] = set()
    teacher = fake_teacher(script=faults)
    run = review_run(teacher.url, model={"max_retries": 1, "retry_max_wait_s": 0.01})
    requests = sample_requests(
        build_task(run.load_config().task), run.load_config(), _train_examples(run)
    )
    broken.add(teacher.key_of(requests[0], "fake-405b"))
    refused.add(teacher.key_of(requests[1], "fake-405b"))
    result = _invoke("synth", str(run.root))
    assert result.exit_code == 3, result.output
    assert "2 teacher call(s) failed" in result.output and "again to retry" in result.output
    errors = _jsonl(run.synth_dir / "errors.jsonl")
    assert [(e["status"], e["attempts"], e["phase"]) for e in errors] == [
        ("http_500", 2, "label"),
        ("http_400", 1, "label"),
    ]
    assert all("upstream error" in e["reason"] for e in errors)  # the server's message
    manifest = json.loads(run.manifest_path.read_text())["stages"]["synth"]
    assert manifest["status"] == "incomplete" and manifest["result"]["failed_calls"] == 2
    summary = json.loads((run.synth_dir / "summary.json").read_text())
    assert summary["failed_rows"] == 2 and summary["rejected"]["call_failed"] == 2
    assert summary["accepted"] == 18
    # The log without a terminal: a plain progress line, then the summary as a sentence.
    assert "synth: labels: 20 to do\n" in result.output
    assert re.search(r"synth: labels: 20/20 in \d+s, (.+, )?2 failed, \$0\.0000", result.output)
    assert (
        "synth: 18 of 20 rows accepted; 2 rejected (2 call failed); 2 of 20 calls failed; "
        "cost $0.0000." in result.output
    )

    broken.clear()
    refused.clear()
    answered = sum(teacher.answered.values())
    again = _invoke("synth", str(run.root))
    assert again.exit_code == 0, again.output
    assert sum(teacher.answered.values()) == answered + 2  # only the failed calls
    # The stored answers are counted as cached, not as work done in no time.
    assert "synth: labels: 20 to do (18 already done)" in again.output
    assert re.search(r"synth: labels: 20/20 in \d+s \(18 cached\), ", again.output)
    assert (run.synth_dir / "errors.jsonl").read_text() == ""
    assert json.loads(run.manifest_path.read_text())["stages"]["synth"]["status"] == "done"


def test_the_budget_stops_new_calls_and_a_bigger_one_finishes_the_rest(
    fake_teacher: Callable[..., Any], review_run: Callable[..., RunFolder]
) -> None:
    teacher = fake_teacher()
    prices = {"price_per_million_input": 1000.0, "price_per_million_output": 1000.0}
    run = review_run(teacher.url, model=prices, budget={"max_usd": 1.0})
    result = _invoke("synth", str(run.root))
    assert result.exit_code == 3, result.output
    summary = json.loads((run.synth_dir / "summary.json").read_text())
    sent = len(teacher.answered)
    assert 0 < sent < 20 and summary["cost_usd"] <= 1.0
    errors = _jsonl(run.synth_dir / "errors.jsonl")
    assert len(errors) == 20 - sent and {e["status"] for e in errors} == {"not_sent"}
    assert "budget.max_usd $1 reached" in errors[0]["reason"]

    config = yaml.safe_load(run.config_path.read_text())
    config["budget"]["max_usd"] = 10.0
    run.config_path.write_text(yaml.safe_dump(config))
    again = _invoke("synth", str(run.root))
    assert again.exit_code == 0, again.output
    assert len(teacher.answered) == 20 and max(teacher.answered.values()) == 1
    assert json.loads((run.synth_dir / "summary.json").read_text())["cost_usd"] <= 10.0


@pytest.mark.parametrize("fault", ["401", "quota"])
def test_a_refused_key_or_spent_quota_stops_the_stage_at_once(
    fake_teacher: Callable[..., Any],
    review_run: Callable[..., RunFolder],
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    teacher = fake_teacher(script=lambda key, attempt: fault)
    monkeypatch.setenv("STAGE_TEST_KEY", "sk-stage-secret-91")
    run = review_run(teacher.url, rows=60, model={"api_key_env": "STAGE_TEST_KEY"})
    result = _invoke("synth", str(run.root))
    assert result.exit_code == 2
    assert "no retry can help" in result.output and "Traceback" not in result.output
    assert "sk-stage-secret-91" not in result.output
    assert sum(teacher.attempts.values()) <= 8  # what was in flight; nothing retried
    assert json.loads(run.manifest_path.read_text())["stages"] == {}


def _train_examples(run: RunFolder) -> list[Example]:
    from potstill.pipeline import prepare_split

    return prepare_split(run, run.load_config()).train


def test_training_inputs_without_a_reference_are_counted_in_the_card(
    fake_teacher: Callable[..., Any], tmp_path: Path
) -> None:
    from synth.conftest import review_config, write_reviews

    from potstill.pipeline import open_run

    data = write_reviews(tmp_path / "reviews.jsonl", 12)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows[::3]:
        del row["label"]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = fake_teacher()
    config = parse_config(review_config(data, teacher.url, {}, {}, {}), "test config")
    run = open_run(config, tmp_path / "runs")
    result = _invoke("synth", str(run.root))
    assert result.exit_code == 0, result.output
    missing = sum(r["reference"] is None for r in _jsonl(run.data_dir / "train.jsonl"))
    summary = json.loads((run.synth_dir / "summary.json").read_text())
    assert missing > 0 and summary["inputs_without_reference"] == missing
    card = (run.synth_dir / "card.md").read_text()
    assert f"training inputs without a reference: {missing} of {summary['inputs']}" in card


def test_a_low_yield_and_a_constant_answer_are_warned_about_when_synth_ends(
    fake_teacher: Callable[..., Any], tmp_path: Path
) -> None:
    from synth.conftest import review_config, write_reviews

    from potstill.pipeline import open_run

    # The labels are positive / negative, the teacher says good / bad: "good" is a synonym,
    # "bad" is not, so every negative reply falls outside the label set.
    data = write_reviews(tmp_path / "reviews.jsonl", 24)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:
        row["label"] = {"good": "positive", "bad": "negative"}[row["label"]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = fake_teacher()
    task = {"kind": "classification", "labels": ["positive", "negative"]}
    tree = review_config(data, teacher.url, {}, {}, {}, checks={"min_teacher_yield": 0.6})
    tree["task"] = {**task, "synonyms": {"positive": ["good"]}}
    run = open_run(parse_config(tree, "test config"), tmp_path / "runs")
    result = _invoke("synth", str(run.root))
    assert result.exit_code == 0, result.output
    summary = json.loads((run.synth_dir / "summary.json").read_text())
    accepted, labelled = summary["accepted"], summary["checks"]["labelled"]
    outside = labelled - accepted
    assert 0 < accepted < 0.6 * labelled and summary["checks"]["outside"] == outside
    found = {w["check"]: w["message"] for w in summary["warnings"]}
    assert set(found) == {"teacher_yield", "teacher_constant_answer"}
    assert (
        f"{outside} of {labelled} replies were outside the label set (most often 'bad' "
        f"{outside}): add what the teacher says as synonyms (task.synonyms)"
    ) in found["teacher_yield"]
    constant = found["teacher_constant_answer"]
    assert f"'positive' in {accepted} of {accepted} kept rows (100.0%" in constant
    # Not the teacher's bias: its "bad" replies are missing from the rows.
    assert f"the other {outside} inputs got no answer in the asked form" in constant
    card = (run.synth_dir / "card.md").read_text()
    assert "## Warnings" in card and f"- {found['teacher_yield']}" in card
    # The CLI says so too, one line per warning, after the stage's sentence.
    output = " ".join(result.output.split())  # rich may wrap long lines
    assert "synth: warning: the teacher's yield is" in output
    assert "synth: warning: one answer fills the training rows: 'positive'" in output
