"""Stage summaries read as sentences or tables, not as a dict's repr."""

from __future__ import annotations

import io
from collections import Counter

from rich.console import Console

from potstill.summaries import (
    counted,
    evaluate_table,
    judge_line,
    synth_sentence,
    train_end_sentence,
    train_start_sentence,
    warning_lines,
)


def test_counts_read_as_words_most_first() -> None:
    assert counted({"no_answer": 7, "malformed": 1, "disagrees_with_reference": 3}) == (
        "7 no answer, 3 disagrees with reference, 1 malformed"
    )
    assert counted({}) == "none" and counted({"too_long": 0}) == "none"


def test_the_synth_summary_is_a_sentence() -> None:
    summary = {
        "accepted": 1,
        "rejected": {"disagrees_with_reference": 3, "no_answer": 7, "malformed": 1},
        "generation_rejected": {},
        "calls": 12,
        "failed_calls": 0,
        "cost_usd": 0.0,
    }
    text = synth_sentence(summary, 12)
    assert text == (
        "synth: 1 of 12 rows accepted; 11 rejected (7 no answer, 3 disagrees with reference, "
        "1 malformed); 0 of 12 calls failed; cost $0.0000."
    )
    assert "{" not in text and "'" not in text


def test_train_says_what_it_trains_on_and_how_it_ended() -> None:
    start = train_start_sentence("distilled", 26, "synth", "answer", Counter(no_reference=2))
    assert (
        start
        == "train[distilled]: 26 rows from synth (target answer); 2 left out (2 no reference)."
    )
    assert train_start_sentence("a", 5, "synth", "answer", Counter()).endswith("; none left out.")
    end = train_end_sentence(
        "distilled", {"steps": 7, "seconds": 62.4, "last_loss": 1.2345, "eval_loss": None}
    )
    assert end == "train[distilled]: 7 steps in 1m02s; loss 1.234 at the end."


def test_evaluate_prints_a_table_of_the_headline_metric() -> None:
    entry = {"value": 0.75, "ci_low": 0.5, "ci_high": 0.9, "n": 8, "percent": True}
    scores = {
        "headline": "accuracy",
        "order": ["teacher", "distilled"],
        "candidates": {
            "teacher": {"role": "teacher", "metrics": {"accuracy": entry}},
            "distilled": {"role": "student", "metrics": {"accuracy": {**entry, "value": 0.5}}},
        },
    }
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=False, width=100).print(evaluate_table(scores))
    rows = [
        line for line in buffer.getvalue().splitlines() if "teacher" in line or "distil" in line
    ]
    assert len(rows) == 2
    assert "75.0%" in rows[0] and "50.0% to 90.0%" in rows[0] and "8" in rows[0]
    assert "50.0%" in rows[1] and rows[1].index("distilled") < rows[1].index("student")
    # A transfer set's scores (the same shape) get the same table, titled with the set.
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=False, width=100).print(evaluate_table(scores, on="r"))
    assert buffer.getvalue().splitlines()[0].strip() == "evaluate: accuracy on transfer set r"


def test_one_of_a_thing_is_singular() -> None:
    end = train_end_sentence("a", {"steps": 1, "seconds": None, "last_loss": None})
    assert end == "train[a]: 1 step."
    assert train_start_sentence("a", 1, "synth", "answer", Counter()).startswith("train[a]: 1 row ")


def test_guard_rail_warnings_and_an_untrusted_judge_are_lines_of_their_own() -> None:
    found = [{"check": "student_rows", "subject": "s", "message": "s was trained on 3 rows."}]
    assert warning_lines("train[s]", found) == ["train[s]: warning: s was trained on 3 rows."]
    assert judge_line({"judge": {"trusted": True, "reasons": []}}) is None
    assert judge_line({}) is None  # no judge, or one from before the decision
    line = judge_line({"judge": {"trusted": False, "reasons": ["100.0% of its 60 flipped"]}})
    assert line == (
        "evaluate: warning: the judge failed its own checks and its scores are left out of "
        "the comparisons: 100.0% of its 60 flipped."
    )
