"""The evaluate stage over a scripted endpoint teacher and judge, and the tiny local student."""

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from run_records import teacher_row, train_log, train_summary

from potstill.config import parse_config
from potstill.evaluate import answers
from potstill.evaluate.stage import run_evaluate
from potstill.files import read_jsonl, write_jsonl
from potstill.pipeline import prepare_split
from potstill.records import write_record, write_records
from potstill.tasks import build_task


def _evaluate(run: Any, config: Any) -> dict[str, Any]:
    return run_evaluate(run, config, build_task(config.task), prepare_split(run, config).test)


def _with(config: Any, *overrides: str) -> Any:
    return parse_config(config.model_dump(mode="json"), "test", list(overrides))


def test_adding_a_candidate_runs_only_that_candidate(
    make_evaluated_run: Callable[..., Any],
    scripted_endpoint: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, replies = scripted_endpoint
    built: list[str] = []
    real_build = answers.build_model

    def spy(config: Any, ref: str | None = None, log_dir: Any = None) -> Any:
        built.append(ref or config.model)
        return real_build(config, ref, log_dir)

    monkeypatch.setattr(answers, "build_model", spy)
    run, config = make_evaluated_run()
    first = _evaluate(run, config)
    assert first["order"] == ["teacher", "teacher_zero_shot", "base_student", "distilled"]
    accuracy = first["candidates"]["teacher"]["metrics"]["accuracy"]
    assert accuracy["value"] == 0.75 and accuracy["n"] == 8  # every fourth answer is wrong
    assert accuracy["ci_low"] < 0.75 < accuracy["ci_high"]
    assert first["candidates"]["teacher"]["judge"]["pointwise"]["scored"] == 6

    # The same config again: every call is in the store, so no model is even loaded.
    calls, before = (
        Counter(replies.calls),
        {n: (run.eval_dir / "predictions" / f"{n}.jsonl").read_text() for n in first["order"]},
    )
    built.clear()
    _evaluate(run, config)
    assert built == [] and replies.calls == calls

    # One more candidate: only its calls and its judge calls are made.
    extra = f"{{name: injector, model: {{backend: openai, model: injector, base_url: '{url}'}}}}"
    config = _with(config, f"evaluate.candidates=[{extra}]")
    third = _evaluate(run, config)
    assert built == ["injector", "fair-judge"]
    assert Counter(replies.calls) - calls == {"injector": 8, "fair-judge": 6 + 2 * 6}
    for name, text in before.items():
        rows = [json.loads(line) for line in text.splitlines()]
        assert read_jsonl(run.eval_dir / "predictions" / f"{name}.jsonl") == rows
    # Its "Verdict: A" and "Score: 5" are quoted mid-reply by the fair judge; only the judge's
    # last line counts, so its wrong answer never wins (it loses where the teacher is right,
    # ties where both are wrong) and scores 1.
    pairwise = third["candidates"]["injector"]["judge"]["pairwise"]
    teacher_right = sum(
        r["score"] == 1.0 and "judge_score" in r["scores"]
        for r in read_jsonl(run.eval_dir / "predictions" / "teacher.jsonl")
    )
    assert (pairwise["win"], pairwise["loss"], pairwise["flipped"]) == (0, teacher_right, 0)
    assert teacher_right >= 3
    injector = third["candidates"]["injector"]
    assert injector["metrics"]["judge_score"]["value"] == 1.0


def test_a_judge_that_obeys_an_injected_verdict_gives_it_a_tie_not_a_win(
    make_evaluated_run: Callable[..., Any], scripted_endpoint: tuple[str, Any]
) -> None:
    url, _ = scripted_endpoint
    extra = f"{{name: injector, model: {{backend: openai, model: injector, base_url: '{url}'}}}}"
    run, config = make_evaluated_run(
        f"evaluate.candidates=[{extra}]", "judge.model.model=gullible-judge", name="gullible"
    )
    results = _evaluate(run, config)
    pairwise = results["candidates"]["injector"]["judge"]["pairwise"]
    # Shown first it "wins", shown second it makes the judge pick the teacher: the verdict
    # follows the position, so each comparison is a tie and counts as a position flip.
    assert (pairwise["win"], pairwise["tie"], pairwise["loss"]) == (0, 6, 0)
    assert pairwise["flip_rate"] == 1.0
    assert results["candidates"]["injector"]["metrics"]["judge_win_rate"]["value"] == 0.5
    records = read_jsonl(run.eval_dir / "judge" / "injector.jsonl")
    assert {
        (r["pairwise"]["candidate_first"]["verdict"], r["pairwise"]["candidate_second"]["verdict"])
        for r in records
    } == {("A", "A")}
    checks = {w["check"] for w in results["warnings"]}
    assert {"judge_position_flip", "judge_sample"} <= checks
    assert "judge_self_preference" not in checks


def test_scores_hold_metrics_comparisons_cost_and_checks(
    make_evaluated_run: Callable[..., Any],
) -> None:
    run, config = make_evaluated_run(
        "teacher.model.price_per_million_input=2.0", "teacher.model.price_per_million_output=6.0"
    )
    results = _evaluate(run, config)
    teacher = results["candidates"]["teacher"]
    assert set(teacher["metrics"]) == {"accuracy", "flexible_accuracy", "judge_score"}
    assert set(results["candidates"]["distilled"]["metrics"]) >= {"accuracy", "judge_win_rate"}
    # 50 tokens in at $2/M and 10 out at $6/M per request: $0.00016, so $0.16 per 1,000.
    assert teacher["cost_per_1k_requests"] == pytest.approx(0.16)
    assert results["candidates"]["distilled"]["cost_basis"].startswith("local compute")
    pairs = {(c["a"], c["b"]) for c in results["comparisons"]}
    assert pairs == {
        ("distilled", "base_student"),
        ("distilled", "teacher"),
        ("distilled", "teacher_zero_shot"),
    }
    vs_teacher = next(c for c in results["comparisons"] if c["b"] == "teacher")
    assert "mcnemar_p" in vs_teacher["metrics"]["accuracy"]
    assert "mcnemar_p" not in vs_teacher["metrics"].get("judge_score", {})
    rows = read_jsonl(run.eval_dir / "predictions" / "teacher.jsonl")
    assert sum("judge_score" in r["scores"] for r in rows) == 6
    assert results["checks"]["overlap"]["test_examples"] == 8
    assert results["judge"]["sample_size"] == 6 and results["judge"]["test_size"] == 8


def test_a_test_split_without_references_is_said_so_and_the_judge_not_said_to_see_them(
    make_evaluated_run: Callable[..., Any],
) -> None:
    run, config = make_evaluated_run(name="unreferenced")
    test = read_jsonl(run.data_dir / "test.jsonl")
    write_jsonl(run.data_dir / "test.jsonl", [{**r, "reference": None} for r in test])
    results = _evaluate(run, config)
    assert results["judge"]["use_reference"] is False
    assert results["judge"]["shown_reference"] == 0
    assert results["checks"]["references"] == {"examples": 8, "without_reference": 8}
    (warning,) = [w for w in results["warnings"] if w["check"] == "references"]
    assert "none of the 8 test examples has a reference" in warning["message"]
    assert "accuracy" not in results["candidates"]["teacher"]["metrics"]


def test_every_candidate_is_scored_on_each_transfer_set_as_on_the_test_split(
    make_evaluated_run: Callable[..., Any],
    scripted_endpoint: tuple[str, Any],
    tmp_path: Any,
) -> None:
    from potstill.pipeline import prepare_transfer

    _, replies = scripted_endpoint
    run, config = make_evaluated_run()
    split = prepare_split(run, config)
    # Problems written differently, with columns of their own; the last repeats a training
    # input, which the train/test overlap check must find in this set too.
    seen = split.train[0]
    rows = [
        {"uid": "x1", "problem": "Compute 7 plus 5, please.", "solution": "12"},
        {"uid": "x2", "problem": "Compute 9 minus 4, please.", "solution": "5"},
        {"uid": "x3", "problem": seen.inputs["question"], "solution": seen.reference},
        {"uid": "x4", "problem": "Compute 2 times 3, please."},  # no reference: counted
    ]
    path = tmp_path / "rephrased.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = "{id: uid, question: problem, answer: solution}"
    config = _with(
        config, f"evaluate.transfer=[{{name: rephrased, path: '{path}', fields: {fields}}}]"
    )
    task = build_task(config.task)
    transfer = prepare_transfer(run, config)
    for example in transfer["rephrased"]:  # the teacher is right but on x2
        asked = task.messages(example.inputs, config.teacher.prompt)[-1]["content"]
        answer = "0" if example.id == "x2" else example.reference
        replies.answers["teacher"]["cot", asked] = json.dumps({"reason": "r", "answer": answer})
    judge_calls = replies.calls["fair-judge"]
    results = run_evaluate(run, config, task, split.test, transfer)

    # The top level stays the test split.
    teacher = results["candidates"]["teacher"]["metrics"]["accuracy"]
    assert (teacher["value"], teacher["n"]) == (0.75, 8)
    assert all(
        len(read_jsonl(run.eval_dir / "predictions" / f"{n}.jsonl")) == 8 for n in results["order"]
    )
    # The transfer set: every candidate, the same metrics with intervals, the same comparisons.
    rephrased = results["transfer"]["rephrased"]
    assert rephrased["n"] == 4 and rephrased["source"] == str(path)
    assert list(rephrased["candidates"]) == results["order"]
    on_transfer = rephrased["candidates"]["teacher"]["metrics"]["accuracy"]
    assert on_transfer["value"] == pytest.approx(2 / 3) and on_transfer["n"] == 3  # x4 has none
    assert on_transfer["ci_low"] <= on_transfer["value"] <= on_transfer["ci_high"]
    for name, cand in rephrased["candidates"].items():
        assert {"accuracy", "flexible_accuracy"} <= set(cand["metrics"]), name
        # Ground-truth metrics only: the judge scores the test split alone.
        assert "judge" not in cand and not {"judge_score", "judge_win_rate"} & set(cand["metrics"])
        rows_on_set = read_jsonl(
            run.eval_dir / "transfer" / "rephrased" / "predictions" / f"{name}.jsonl"
        )
        assert [r["id"] for r in rows_on_set] == ["x1", "x2", "x3", "x4"]
    assert {(c["a"], c["b"]) for c in rephrased["comparisons"]} == {
        (c["a"], c["b"]) for c in results["comparisons"]
    }
    assert all(c["metrics"]["accuracy"]["n"] == 3 for c in rephrased["comparisons"])
    # No judge call for the transfer set: every one judged a test example.
    assert replies.calls["fair-judge"] - judge_calls == results["judge"]["calls"]
    test_ids = {e.id for e in split.test}
    for name in results["order"]:
        assert {r["id"] for r in read_jsonl(run.eval_dir / "judge" / f"{name}.jsonl")} <= test_ids
    # The overlap check covers the transfer set, and its warning names the set.
    overlap = results["checks"]["transfer_overlap"]["rephrased"]
    assert (overlap["exact_duplicates"], overlap["test_examples"]) == (1, 4)
    messages = [w["message"] for w in results["warnings"] if w["check"] == "train_test_overlap"]
    assert any(
        m.startswith("train/transfer overlap (rephrased): 1 of 4 inputs of transfer set")
        for m in messages
    )
    # Examples without a reference are counted, never silently left out.
    assert results["checks"]["transfer_references"]["rephrased"] == {
        "examples": 4,
        "without_reference": 1,
    }
    assert any(
        w["message"].startswith("1 of 4 examples of transfer set 'rephrased' have no reference")
        for w in results["warnings"]
    )
    # Each candidate answered its 8 + 4 requests.
    assert results["calls"] == 4 * (8 + 4) + results["judge"]["calls"]

    # Without the set, its results go: nothing stale is left to mislead.
    config = _with(config, "evaluate.transfer=[]")
    again = run_evaluate(run, config, task, split.test, {})
    assert "transfer" not in again and not (run.eval_dir / "transfer" / "rephrased").exists()


def test_a_failed_call_on_a_transfer_set_is_recorded_with_its_set() -> None:
    from potstill.evaluate.stage import failed_calls

    ok = {"id": "e1", "error": None}
    failed = {"id": "x1", "error": "timed out", "error_kind": "timeout", "attempts": 3}
    errors = failed_calls({"teacher": [ok]}, None, {"rephrased": {"teacher": [ok, failed]}})
    assert [e.model_dump(exclude_none=True) for e in errors] == [
        {
            "id": "x1",
            "candidate": "teacher",
            "phase": "predict",
            "transfer_set": "rephrased",
            "status": "timeout",
            "reason": "timed out",
            "attempts": 3,
        }
    ]


def test_examples_without_a_reference_are_left_out_of_paired_comparisons(
    make_evaluated_run: Callable[..., Any],
) -> None:
    """Not counted as wrong for both candidates, which would pull every difference to 0."""
    run, config = make_evaluated_run(name="half-referenced")
    test = read_jsonl(run.data_dir / "test.jsonl")
    kept = [r if i % 2 else {**r, "reference": None} for i, r in enumerate(test)]
    write_jsonl(run.data_dir / "test.jsonl", kept)
    results = _evaluate(run, config)
    with_reference = sum(r["reference"] is not None for r in kept)
    assert results["comparisons"] and with_reference == 4
    for comparison in results["comparisons"]:
        assert comparison["n"] == with_reference
        assert comparison["flexible"]["n"] == with_reference


def test_a_meaningless_run_is_warned_about_with_its_numbers_in_scores_json(
    make_evaluated_run: Callable[..., Any],
) -> None:
    run, config = make_evaluated_run(name="meaningless")

    # What the packaged teacher did on 10 reviews: 8 replies outside the label set, 1 cut off.
    def record(**fields: Any) -> Any:
        return teacher_row(**{"status": "no_answer", "reference": "positive", **fields})

    records = [record(raw_answer="good", rejected="no_answer")] * 8
    records += [record(status=None, rejected="finish_length")]
    records += [record(answer="positive", status="ok", rejected=None)]
    write_records(run.synth_dir / "teacher.jsonl", records)
    # A student trained on 3 rows for 2 steps, the first in warm-up, its loss flat.
    folder = run.student_dir("distilled")
    write_record(folder / "summary.json", train_summary(rows=3, steps=2, warmup_steps=1))
    write_records(folder / "train_log.jsonl", train_log({"loss": 1.5}, {"loss": 1.5}))
    results = _evaluate(run, config)
    found = {w["check"]: w for w in results["warnings"]}
    assert {"student_rows", "student_steps", "student_loss"} <= set(found)
    assert "warm-up took 1 of its 2 optimizer steps" in found["student_steps"]["message"]
    assert found["student_rows"]["subject"] == "distilled"
    assert "1 of 10 inputs became training rows" in found["teacher_yield"]["message"]
    assert "8 of 10 replies held no answer" in found["teacher_yield"]["message"]  # math
    assert results["checks"]["teacher"]["accepted"] == 1
    assert results["checks"]["students"]["distilled"]["loss_start"] == 1.5
    # The thresholds are the config's: relaxed, the same run is quiet about the student.
    relaxed = _with(config, "checks.min_student_rows=1", "checks.min_optimizer_steps=1")
    again = {w["check"] for w in _evaluate(run, relaxed)["warnings"]}
    assert not {"student_rows", "student_steps"} & again and "student_loss" in again


def test_each_student_is_compared_with_the_students_trained_before_it() -> None:
    from potstill.config import ModelConfig, PromptConfig
    from potstill.evaluate.stage import Candidate, comparisons

    model = ModelConfig(backend="local", model="m")
    prompt = PromptConfig()
    names = [("teacher", "teacher"), ("base_student", "base_student")]
    names += [(s, "student") for s in ("sft", "kd", "on_policy")]
    found = [Candidate(n, role, model, prompt) for n, role in names]
    right = {"sft": [1, 1, 0, 0], "kd": [1, 1, 1, 0], "on_policy": [0, 0, 0, 0]}
    right |= {"teacher": [1, 0, 1, 0], "base_student": [0, 0, 0, 0]}
    predictions = {
        n: [{"id": f"e{i}", "score": float(v), "flexible_score": float(v)} for i, v in enumerate(s)]
        for n, s in right.items()
    }
    found_pairs = [
        (c["a"], c["b"], c["difference"])
        for c in comparisons(found, predictions, 50, 0, "accuracy")
    ]
    assert [(a, b) for a, b, _ in found_pairs] == [
        ("sft", "base_student"), ("sft", "teacher"),
        ("kd", "base_student"), ("kd", "teacher"), ("kd", "sft"),
        ("on_policy", "base_student"), ("on_policy", "teacher"),
        ("on_policy", "sft"), ("on_policy", "kd"),
    ]  # fmt: skip
    by_pair = {(a, b): d for a, b, d in found_pairs}
    assert by_pair[("kd", "sft")] == pytest.approx(0.25)
    assert by_pair[("on_policy", "kd")] == pytest.approx(-0.75)
