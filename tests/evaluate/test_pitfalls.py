"""Each pitfall check turns a misleading situation into numbers and a warning."""

from typing import Any

from potstill.config import ChecksConfig, TaskConfig
from potstill.evaluate.pitfalls import (
    format_check,
    format_warnings,
    judge_trust,
    judge_warnings,
    overlap_check,
    overlap_warnings,
    parse_failures,
    ranking_disagreements,
    reference_check,
    reference_warnings,
    reply_shape,
    set_judge_aside,
    too_few_examples,
)
from potstill.tasks import Example, build_task


def _row(
    reply: str, status: str = "ok", flexible: str | None = "1", finish: str = "stop"
) -> dict[str, Any]:
    return {"reply": reply, "status": status, "flexible_answer": flexible, "finish_reason": finish}


def test_parse_failures_warn_from_five_percent() -> None:
    cand = {"no_answer_rate": 0.03, "malformed_rate": 0.01, "call_failed_rate": 0.0}
    assert parse_failures("s", cand) == []
    cand["malformed_rate"] = 0.03
    [warning] = parse_failures("s", cand)
    assert "6.0% of replies gave no usable answer" in warning["message"]


def test_format_drift_against_the_training_targets() -> None:
    rows = [_row("12 + 5")] * 6 + [
        _row('{"answer": "12 + 5"}\nmore text', "malformed", "17", "length")
    ] * 4
    check = format_check(rows, targets=["3 + 4", "9 * 2", "8 - 1"], max_tokens=24)
    assert check["off_format_rate"] == 0.4 and check["cut_off_rate"] == 0.4
    assert check["target_shape"] == "text on one line" and check["shape_mismatch_rate"] == 0.4
    [warning] = format_warnings("distilled", check)
    assert warning["check"] == "format" and "format drift" in warning["message"]
    assert "40.0% of replies hold an answer outside the asked format" in warning["message"]
    assert "cut off at max_tokens (24)" in warning["message"]
    clean = format_check([_row("3 + 4")] * 5, targets=["1 + 2"], max_tokens=24)
    assert format_warnings("distilled", clean) == []
    assert reply_shape("") == "empty" and reply_shape("```json\n{}\n```") == "JSON on several lines"


def test_overlap_counts_copies_and_shared_ngrams() -> None:
    task = build_task(TaskConfig(kind="math"))

    def ex(i: int, q: str) -> Example:
        return Example(str(i), {"question": q}, "1")

    train = [ex(0, "Tom has 3 red apples and buys 4 more red apples at the shop today.")]
    test = [
        ex(1, "Tom has 3 red apples and buys 4 more red apples at the shop today!"),  # a copy
        ex(2, "Anna has 3 red apples and buys 4 more red apples at the shop today."),
        ex(3, "A completely different question about trains and their many long journeys."),
    ]
    check = overlap_check(task, train, test, n=8)
    assert check["exact_duplicates"] == 1
    assert check["half_overlapping_rate"] == 2 / 3
    [warning] = overlap_warnings(check)
    assert "1 of 3 test inputs also appear in the training split" in warning["message"]
    assert overlap_warnings(overlap_check(task, train, test[2:], n=8)) == []


def test_overlap_reads_the_inputs_not_the_words_a_user_template_wraps_them_in() -> None:
    # A long user template puts the same 8-grams into every prompt; they are no overlap.
    wrapper = "Please read the following word problem very carefully and then solve it: "
    task = build_task(
        TaskConfig(kind="math", templates={"user": wrapper + "{{ inputs['question'] }}"})
    )
    train = [Example("0", {"question": "Tom has 3 apples and buys 4 more."}, "7")]
    test = [Example("1", {"question": "A train leaves at noon and runs for two hours."}, "2")]
    check = overlap_check(task, train, test, n=8)
    assert check["mean_overlap"] == 0.0 and check["exact_duplicates"] == 0


def _metric(value: float, higher: bool = True) -> dict[str, Any]:
    return {
        "value": value,
        "ci_low": value - 0.1,
        "ci_high": value + 0.1,
        "n": 50,
        "higher_is_better": higher,
        "percent": False,
    }


def test_metrics_that_rank_candidates_differently_are_named() -> None:
    candidates = {
        "a": {
            "metrics": {
                "rouge": _metric(0.5),
                "judge_score": _metric(2.0),
                "loss": _metric(1.0, False),
            }
        },
        "b": {
            "metrics": {
                "rouge": _metric(0.4),
                "judge_score": _metric(3.0),
                "loss": _metric(2.0, False),
            }
        },
    }
    found = ranking_disagreements(candidates)
    messages = " ".join(w["message"] for w in found)
    assert "rouge puts a above b (0.5 vs 0.4), judge_score the other way (2 vs 3)" in messages
    # loss is lower-is-better: a's lower loss agrees with rouge, disagrees with the judge.
    pairs = {w["subject"] for w in found}
    assert pairs == {"rouge/judge_score", "judge_score/loss"}


def test_an_interval_through_zero_says_how_many_examples_it_would_take() -> None:
    comparisons = [
        {
            "a": "s",
            "b": "t",
            "metrics": {
                "accuracy": {"n": 100, "difference": 0.05, "ci_low": -0.05, "ci_high": 0.15},
                "judge_score": {"n": 40, "difference": 0.5, "ci_low": 0.1, "ci_high": 0.9},
                "same": {"n": 40, "difference": 0.0, "ci_low": 0.0, "ci_high": 0.0},
            },
        },
    ]
    [warning] = too_few_examples(comparisons)
    # Half-width 0.10 for a difference of 0.05: about (0.10 / 0.05)^2 = 4 times the examples.
    assert (
        "accuracy +0.05 [-0.05, +0.15] on 100 examples (about 400 would resolve"
        in warning["message"]
    )
    assert "judge_score" not in warning["message"] and "same" not in warning["message"]


def test_judge_warnings_cover_sample_self_preference_position_and_length() -> None:
    judge = {
        "sample_size": 50,
        "test_size": 240,
        "same_as_teacher": True,
        "model": "m",
        "bias": {
            "pairs": 40,
            "flip_rate": 0.35,
            "first_position_rate": 0.8,
            "first_position_n": 60,
            "score_length_spearman": 0.45,
            "score_length_n": 100,
            "verdict_length_spearman": 0.1,
            "verdict_length_n": 40,
        },
    }
    candidates = {
        "s": {"judge": {"pointwise": {"malformed_rate": 0.3}, "pairwise": {"malformed_rate": 0.0}}}
    }
    found = {w["check"]: w["message"] for w in judge_warnings(judge, candidates)}
    assert set(found) == {
        "judge_sample",
        "judge_self_preference",
        "judge_parse_failure",
        "judge_position_flip",
        "judge_position_bias",
        "judge_length_bias",
    }
    assert "50 of 240 test examples" in found["judge_sample"]
    assert "35.0% of 40 pairwise verdicts" in found["judge_position_flip"]
    assert "Spearman +0.45, n = 100" in found["judge_length_bias"]


def test_test_examples_without_a_reference_are_counted_and_warned_about() -> None:
    math = build_task(TaskConfig(kind="math"))
    test = [Example(f"e{i}", {"question": "q"}, "1" if i % 2 else None) for i in range(6)]
    check = reference_check(test)
    assert check == {"examples": 6, "without_reference": 3}
    (warning,) = reference_warnings(math, check)
    assert warning["check"] == "references"
    assert "3 of 6 test examples have no reference" in warning["message"]
    none = reference_check([Example("e", {"question": "q"}, None)])
    assert "dataset.fields.answer" in reference_warnings(math, none)[0]["message"]
    assert reference_warnings(math, reference_check(test[1::2])) == []


def _judged(flip: float | None, first: float | None = 0.5, first_n: int = 40) -> dict[str, Any]:
    return {
        "bias": {
            "pairs": 48,
            "flip_rate": flip,
            "first_position_rate": first,
            "first_position_n": first_n,
        }
    }


def _judge_entry(judged: int, scored: int, pairs: int, decided: int) -> dict[str, Any]:
    return {
        "judge": {
            "pointwise": {"judged": judged, "scored": scored},
            "pairwise": {"pairs": pairs, "decided": decided},
        }
    }


def test_a_judge_past_a_bias_threshold_is_not_trusted_and_says_why() -> None:
    checks, fine = ChecksConfig(), {"s": _judge_entry(30, 30, 30, 30)}
    assert judge_trust(_judged(0.3), fine, checks) == {"trusted": True, "reasons": []}
    # The packaged 135M judge: every verdict follows the position.
    (reason,) = judge_trust(_judged(1.0), fine, checks)["reasons"]
    assert reason.startswith("100.0% of its 48 pairwise verdicts changed when the two answers")
    assert "at or above 50.0%, checks.max_judge_flip_rate" in reason
    # A coin-flip judge flips half its verdicts: that is already no evidence.
    assert judge_trust(_judged(0.5), fine, checks)["trusted"] is False
    # Unreadable replies, over every candidate: 20 of 60 pointwise is a third.
    unread = {"a": _judge_entry(30, 10, 30, 30), "b": _judge_entry(30, 30, 30, 30)}
    (reason,) = judge_trust(_judged(0.0), unread, checks)["reasons"]
    assert "20 of its 60 pointwise replies (33.3%) had no readable score" in reason
    # Position skew needs 20 single-order verdicts; 80% A is 30 points from 50%.
    (reason,) = judge_trust(_judged(0.0, first=0.8), fine, checks)["reasons"]
    assert "named position A in 80.0% of 40 single-order verdicts" in reason
    assert judge_trust(_judged(0.0, first=0.8, first_n=10), fine, checks)["trusted"] is True
    # Thresholds are the user's: a stricter flip limit distrusts the 30% judge.
    assert judge_trust(_judged(0.3), fine, ChecksConfig(max_judge_flip_rate=0.2))["reasons"]
    # A judge without pairwise verdicts is judged on what it has.
    assert judge_trust({"bias": {"flip_rate": None, "pairs": 0}}, {}, checks)["trusted"] is True


def test_an_untrusted_judge_leaves_the_metrics_comparisons_and_disagreements() -> None:
    def candidate(accuracy: float, judge: float) -> dict[str, Any]:
        return {
            "metrics": {"accuracy": _metric(accuracy), "judge_score": _metric(judge)},
            **_judge_entry(6, 6, 6, 6),
        }

    results = {
        "candidates": {"a": candidate(0.8, 2.0), "b": candidate(0.6, 4.0)},
        "comparisons": [
            {"a": "a", "b": "b", "metrics": {"accuracy": {}, "judge_score": {}}},
        ],
    }
    assert ranking_disagreements(results["candidates"])  # the judge disagrees with accuracy
    set_judge_aside(results)
    a = results["candidates"]["a"]
    assert set(a["metrics"]) == {"accuracy"}
    assert a["judge"]["metrics"]["judge_score"]["value"] == 2.0  # kept for the judge section
    assert set(results["comparisons"][0]["metrics"]) == {"accuracy"}
    assert ranking_disagreements(results["candidates"]) == []
    judge = {
        "sample_size": 6,
        "test_size": 6,
        "same_as_teacher": False,
        "trusted": False,
        "reasons": ["100.0% of its 12 pairwise verdicts changed"],
        "bias": {"pairs": 12, "flip_rate": 1.0, "first_position_n": 0},
    }
    found = {w["check"]: w["message"] for w in judge_warnings(judge, results["candidates"])}
    assert found["judge_untrusted"].startswith(
        "the judge failed its own checks, so its scores are not evidence: 100.0% of its 12 "
    )
    assert "left out of the comparison table, the paired comparisons" in found["judge_untrusted"]
