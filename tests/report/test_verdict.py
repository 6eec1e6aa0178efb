"""The verdict at the top of the report, from scores built by the real evaluate stage: every
candidate's replies are scripted (right or wrong per test example) in place of a model."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from potstill.config import parse_config
from potstill.evaluate import stage
from potstill.evaluate.stats import paired_difference
from potstill.files import read_jsonl, write_jsonl
from potstill.models.base import ChatResponse
from potstill.pipeline import open_run, prepare_split, prepare_transfer
from potstill.report.stage import run_report
from potstill.report.verdict import MIN_PAIRED, SetVerdict, verdict_word, verdicts
from potstill.tasks import Example, build_task

# Who is right on which example: a candidate's name -> right (True) or wrong per example, or
# (name, transfer set) -> the same for that set.
Script = dict[Any, list[bool]]


def _tree(n: int, **changes: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "name": "verdict",
        "task": {"kind": "math"},
        "dataset": {"generator": {"size": n + 4, "seed": 3}, "test_size": n},
        "teacher": {
            "model": {
                "backend": "openai",
                "model": "big",
                "base_url": "http://127.0.0.1:9/v1",
                "price_per_million_input": 2.0,
                "price_per_million_output": 6.0,
            },
            "prompt": {"style": "zero_shot", "max_tokens": 8},
        },
        "students": [{"name": "distilled", "base": {"model": "small"}}],
        "synth": {"prompt": {"style": "zero_shot", "max_tokens": 8}},
        "evaluate": {"bootstrap_samples": 200, "report_examples": 0},
        "judge": {"enabled": False},
    }
    tree.update(changes)
    return tree


@pytest.fixture
def evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[dict[str, Any], Any, Any]]:
    """Runs the real run_evaluate on a math run whose candidates answer from a script;
    returns (scores.json as written, run, config)."""

    def make(
        script: Script,
        n: int,
        transfer: dict[str, list[dict[str, str]]] | None = None,
        references: bool = True,
        **changes: Any,
    ) -> tuple[dict[str, Any], Any, Any]:
        sets = []
        for name, rows in (transfer or {}).items():
            path = tmp_path / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            sets.append({"name": name, "path": str(path)})
        tree = _tree(n, **changes)
        tree["evaluate"]["transfer"] = sets
        config = parse_config(tree, "verdict.yaml")
        run = open_run(config, tmp_path / "runs")
        test = prepare_split(run, config).test
        on_transfer = prepare_transfer(run, config)
        if not references:
            test = [Example(e.id, e.inputs, None) for e in test]
            write_jsonl(run.data_dir / "test.jsonl", [e.to_json() for e in test])
        examples_of = {None: test, **on_transfer}

        def answer(_run: Any, model: Any, requests: Any, label: str, *_: Any) -> Any:
            name, _, where = label.removeprefix("evaluate: ").partition(" on ")
            examples = examples_of[where or None]
            right = script[(name, where) if where else name]
            cot = "step by step" in requests[0].messages[0]["content"]
            replies = []
            for example, ok in zip(examples, right, strict=True):
                text = str(example.reference or 1) if ok else "-1"
                if cot:
                    text = json.dumps({"reason": "r", "answer": text})
                tokens = 40 if name == "teacher" else 3
                replies.append(ChatResponse(text, "stop", 30, tokens, 0.01 * tokens))
            assert len(replies) == len(requests)
            return replies

        monkeypatch.setattr(stage, "answer_cached", answer)
        stage.run_evaluate(run, config, build_task(config.task), test, on_transfer)
        scores = json.loads((run.eval_dir / "scores.json").read_text())
        return scores, run, config

    return make


def _right(n: int, first: int) -> list[bool]:
    """Right on the first `first` of n examples."""
    return [i < first for i in range(n)]


def _lines(block: SetVerdict) -> str:
    return "\n".join(
        [block.title, *(s.head for s in block.students)]
        + [line for s in block.students for line in s.lines]
        + block.notes
    )


def _line(block: SetVerdict, start: str) -> str:
    (found,) = [line for s in block.students for line in s.lines if line.startswith(start)]
    return found


def test_better_worse_and_not_distinguishable_with_the_paired_interval(
    evaluated: Callable[..., Any],
) -> None:
    n = 40
    script = {"teacher": [True] * n, "base_student": _right(n, 10), "distilled": _right(n, 24)}
    scores, _, _ = evaluated(script, n)
    (block,) = verdicts(scores)
    assert block.title == "Test split (40 examples)"
    (student,) = block.students
    assert student.head == "distilled: accuracy 60.0% [44.6%, 73.7%], n = 40"
    comp = next(c for c in scores["comparisons"] if c["b"] == "base_student")
    assert comp["interval"] == "newcombe"
    low, high = 100 * comp["ci_low"], 100 * comp["ci_high"]
    assert _line(block, "vs base_student") == (
        f"vs base_student (25.0%): better, +35.0 pts [{low:+.1f}, {high:+.1f}] on 40 paired "
        "examples"
    )
    assert _line(block, "vs teacher").startswith("vs teacher (100.0%): worse, -40.0 pts [")
    # The cost beside the evidence: the student's and the teacher's, from scores.json.
    cost = _line(block, "cost: ")
    assert cost.startswith("cost: distilled $")
    assert "3.0 generated tokens" in cost and "teacher $0.3 per 1,000 answers" in cost
    assert "40.0 generated tokens, 0.4 s latency per answer" in cost
    assert "priced on different bases" in cost  # local compute against endpoint prices

    # Four examples apart on forty: the interval includes zero.
    script = {"teacher": _right(n, 26), "base_student": _right(n, 22), "distilled": _right(n, 24)}
    (block,) = verdicts(evaluated(script, n)[0])
    assert _line(block, "vs teacher").startswith(
        "vs teacher (65.0%): not distinguishable, -5.0 pts ["
    )
    assert "not distinguishable, +5.0 pts [" in _line(block, "vs base_student")


def test_ties_at_zero_and_at_one_hundred_percent_keep_an_interval_that_says_something(
    evaluated: Callable[..., Any],
) -> None:
    n = 40
    everyone = {name: [True] * n for name in ("teacher", "base_student", "distilled")}
    (block,) = verdicts(evaluated(everyone, n)[0])
    assert block.students[0].head == "distilled: accuracy 100.0% [91.2%, 100.0%], n = 40"
    # A tie at 100%: the bootstrap said +0.0 [+0.0, +0.0]; the paired score interval does not.
    line = _line(block, "vs teacher")
    assert line == (
        "vs teacher (100.0%): not distinguishable, +0.0 pts [-8.8, +8.8] on 40 paired examples"
    )
    assert "degenerate" not in _lines(block)
    nobody = {name: [False] * n for name in everyone}
    (block,) = verdicts(evaluated(nobody, n)[0])
    assert block.students[0].head == "distilled: accuracy 0.0% [0.0%, 8.8%], n = 40"
    assert _line(block, "vs base_student").startswith(
        "vs base_student (0.0%): not distinguishable,"
    )


@pytest.mark.parametrize("n", [1, 8])
def test_too_few_paired_examples_are_flagged_whatever_the_difference(
    evaluated: Callable[..., Any], n: int
) -> None:
    script = {"teacher": [False] * n, "base_student": [False] * n, "distilled": [True] * n}
    (block,) = verdicts(evaluated(script, n)[0])
    line = _line(block, "vs base_student")
    assert line.startswith("vs base_student (0.0%): too few examples to tell, +100.0 pts [")
    assert line.endswith(f"on {n} paired examples — a verdict needs at least {MIN_PAIRED}")


def test_a_degenerate_bootstrap_interval_gives_no_verdict() -> None:
    # A graded score (ROUGE) that differs by the same amount on every example.
    a = [0.3, 0.5, 0.4] * 20
    comp = paired_difference(a, [x - 0.1 for x in a], samples=200, seed=0)
    assert comp["interval"] == "bootstrap"
    assert comp["ci_low"] == pytest.approx(comp["ci_high"]) == pytest.approx(0.1)
    word, why = verdict_word(comp)
    assert word == "cannot tell" and "single point" in why
    empty = paired_difference([], [])
    assert verdict_word(empty) == ("cannot tell", "no example with a reference is scored for both")
    # A metric where lower is better turns the words round.
    noisy = paired_difference([0.1, 0.2] * 20, [0.5, 0.7] * 20, samples=200, seed=0)
    assert verdict_word(noisy) == ("worse", "")
    assert verdict_word(noisy, higher_is_better=False) == ("better", "")


def test_the_same_model_with_the_same_prompt_is_shown_once(
    evaluated: Callable[..., Any],
) -> None:
    """The teacher asked zero-shot is the base student when both are the same local model."""
    n = 40
    small = {"backend": "local", "model": "small"}
    teacher = {"model": small, "prompt": {"style": "cot", "max_tokens": 8}}
    script = {
        "teacher": _right(n, 30),
        "teacher_zero_shot": _right(n, 12),
        "base_student": _right(n, 12),
        "distilled": _right(n, 20),
    }
    scores, run, config = evaluated(script, n, teacher=teacher)
    names = scores["candidates"]
    assert names["teacher_zero_shot"]["identity"] == names["base_student"]["identity"]
    assert names["teacher"]["identity"] != names["base_student"]["identity"]
    (block,) = verdicts(scores)
    text = _lines(block)
    assert text.count("vs ") == 2 and "vs teacher_zero_shot" not in text
    assert _line(block, "vs base_student (30.0%; also teacher_zero_shot): better, +20.0 pts [")
    assert block.notes == [
        "base_student and teacher_zero_shot are the same model asked with the same prompt "
        "(their answers are the same): shown once, as base_student."
    ]
    # The report's tables show them once too: one row, no comparison with the twin.
    run_report(run, config)
    md = (run.root / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| base_student (also")]
    assert len(rows) == 1 and rows[0].startswith("| base_student (also teacher_zero_shot) |")
    assert "| teacher_zero_shot | teacher |" not in md
    assert "| distilled | teacher_zero_shot |" not in md
    assert "| distilled | base_student |" in md


def test_no_reference_no_verdict_and_the_judge_is_not_used_instead(
    evaluated: Callable[..., Any],
) -> None:
    n = 40
    script = {name: [True] * n for name in ("teacher", "base_student", "distilled")}
    (block,) = verdicts(evaluated(script, n, references=False)[0])
    assert not block.students
    (note,) = block.notes
    assert note.startswith("No verdict: accuracy, the task's headline ground-truth metric,")
    assert "no example of this set has one" in note and "judge" in note


def test_each_transfer_set_gets_its_own_verdict_after_the_test_split(
    evaluated: Callable[..., Any],
) -> None:
    n, m = 40, 36
    rephrased = [
        {"id": f"x{i}", "question": f"Compute {i} plus 1.", "answer": str(i + 1)} for i in range(m)
    ]
    script = {"teacher": [True] * n, "base_student": _right(n, 10), "distilled": _right(n, 24)}
    script |= {
        ("teacher", "rephrased"): [True] * m,
        ("base_student", "rephrased"): _right(m, 30),
        ("distilled", "rephrased"): _right(m, 8),
    }
    scores, _, _ = evaluated(script, n, transfer={"rephrased": rephrased})
    test, transfer = verdicts(scores, ["rephrased"])
    assert test.title.startswith("Test split") and "better" in _line(test, "vs base_student")
    assert transfer.title == "Transfer set rephrased (36 examples)"
    assert transfer.students[0].head == "distilled: accuracy 22.2% [11.7%, 38.1%], n = 36"
    assert _line(transfer, "vs base_student").startswith(
        "vs base_student (83.3%): worse, -61.1 pts ["
    )


def test_report_md_and_html_start_with_the_verdict(evaluated: Callable[..., Any]) -> None:
    n = 40
    script = {"teacher": [True] * n, "base_student": _right(n, 10), "distilled": _right(n, 24)}
    _, run, config = evaluated(script, n)
    md = run_report(run, config).read_text().splitlines()
    assert md[:7] == [
        "# potstill report: verdict",
        "",
        "## Verdict",
        "",
        "**Test split (40 examples)**",
        "",
        "- distilled: accuracy 60.0% [44.6%, 73.7%], n = 40",
    ]
    assert md[7].startswith("  - vs base_student (25.0%): better, +35.0 pts [")
    assert md[8].startswith("  - vs teacher (100.0%): worse, -40.0 pts [")
    assert md[9].startswith("  - cost: distilled $")
    assert md.index("## Verdict") < md.index("## Comparison")
    html = (run.root / "report.html").read_text()
    body = html[html.index("<body>") :]
    assert body.index('<section id="verdict">') < body.index("<h2>Comparison</h2>")
    assert "vs base_student (25.0%): better, +35.0 pts [" in body
    assert read_jsonl(run.eval_dir / "predictions" / "distilled.jsonl")[0]["score"] == 1.0


def test_the_tables_flag_a_degenerate_interval_too() -> None:
    from potstill.report.stage import metric_text

    flat = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 12, "percent": True}
    assert metric_text(flat) == "100.0% [100.0%, 100.0%] (degenerate)"
    wilson = {"value": 1.0, "ci_low": 0.7575, "ci_high": 1.0, "n": 12, "percent": True}
    assert metric_text(wilson) == "100.0% [75.8%, 100.0%]"


def test_a_guard_rail_that_fired_is_repeated_in_the_verdict(
    evaluated: Callable[..., Any],
) -> None:
    """A student trained on 3 rows for 2 steps, and a teacher who said one answer to nearly
    every input: the verdict says so beside the numbers, on every set, since the comparison
    may mean little."""
    from potstill.config import ChecksConfig
    from potstill.guards import student_warnings, warn

    n = 8
    script = {"teacher": [True] * n, "base_student": _right(n, 2), "distilled": _right(n, 3)}
    scores, _, _ = evaluated(script, n)
    figures = {"rows": 3, "steps": 2, "warmup_steps": 1, "loss_start": 3.3, "loss_end": 3.3}
    found = student_warnings("distilled", figures, ChecksConfig())
    assert {w["check"] for w in found} == {"student_rows", "student_steps", "student_loss"}
    constant = warn("teacher_constant_answer", "teacher", "the teacher said '7' to 9 of 10.")
    scores["warnings"] = [*scores.get("warnings", []), *found, constant]
    (block,) = verdicts(scores)
    cautions = [line for s in block.students for line in s.lines if line.startswith("caution")]
    assert cautions == [f"caution: {w['message']}" for w in found]
    assert "caution: distilled was trained on 3 rows (fewer than 50" in cautions[0]
    assert block.notes[-1] == "Caution, the training data: the teacher said '7' to 9 of 10."


@pytest.mark.parametrize(
    ("mine", "share"), [(0.22, "22%"), (0.0005, "0.05%"), (3.2, "320%"), (12.345, "1234%")]
)
def test_the_share_of_the_teachers_cost_is_written_without_an_exponent(
    mine: float, share: str
) -> None:
    from potstill.report.verdict import _cost_line

    candidates = {"s": {"cost_per_1k_requests": mine}, "t": {"cost_per_1k_requests": 1.0}}
    assert f"({share} of the teacher's cost)" in _cost_line("s", candidates, "t")
