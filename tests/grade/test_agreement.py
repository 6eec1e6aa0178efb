"""Agreement coefficients against published worked examples; the judge adapter."""

from pathlib import Path

import pytest

from potstill.evaluate.stats import (
    bootstrap_units,
    cohen_kappa,
    krippendorff_alpha,
    spearman,
)
from potstill.grade.agreement import load_judge_verdicts
from potstill.records import JudgeRecord, write_records
from potstill.runs import RunFolder


def test_cohen_kappa_matches_the_textbook_table() -> None:
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o 0.7, p_e 0.5.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_weighted_kappa_credits_near_misses_and_equals_kappa_on_two_categories() -> None:
    a, b = [1, 1, 2, 2, 1, 2], [1, 2, 2, 2, 1, 1]
    assert cohen_kappa(a, b, "quadratic") == pytest.approx(cohen_kappa(a, b))
    near = cohen_kappa([1, 2, 3, 4, 5], [2, 3, 4, 5, 4], "quadratic")
    far = cohen_kappa([1, 2, 3, 4, 5], [5, 1, 4, 2, 3], "quadratic")
    assert cohen_kappa([1, 2, 3, 4, 5], [2, 3, 4, 5, 4]) < 0 < near
    assert far < near
    assert cohen_kappa([3, 3], [3, 3]) is None  # undefined: no variation


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C:
# 4 observers, 12 units, missing values; alpha = .743 nominal, .815 ordinal, .849 interval.
RELIABILITY_DATA = [
    [1, None, 1, 1],
    [2, 2, 3, 2],
    [3, 3, 3, 3],
    [3, 3, 3, 3],
    [2, 2, 2, 2],
    [1, 2, 3, 4],
    [4, 4, 4, 4],
    [1, 1, 2, 1],
    [2, 2, 2, 2],
    [None, 5, 5, 5],
    [None, None, 1, 1],
    [None, 3, None, None],
]


@pytest.mark.parametrize(
    ("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_krippendorff_alpha_matches_the_published_example(level: str, expected: float) -> None:
    units = [[v for v in row if v is not None] for row in RELIABILITY_DATA]
    assert krippendorff_alpha(units, level) == pytest.approx(expected, abs=5e-4)  # type: ignore[arg-type]


def test_alpha_and_kappa_agree_closely_for_two_raters_without_missing_values() -> None:
    a = ["win", "tie", "loss", "win", "win", "loss", "tie", "win", "loss", "win"]
    b = ["win", "tie", "loss", "tie", "win", "loss", "win", "win", "loss", "win"]
    alpha = krippendorff_alpha([[x, y] for x, y in zip(a, b)])
    # Two raters, no missing values: alpha and kappa differ only by a small-sample term.
    assert alpha == pytest.approx(cohen_kappa(a, b), abs=0.05)
    assert krippendorff_alpha([[x, x] for x in a]) == 1.0


def test_spearman_with_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Average ranks for ties: x ranks 1.5, 1.5, 3, 4.
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    # Undefined is None, never NaN (the one rule for missing data in evaluate/stats.py).
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [2, 1]) is None  # fewer than 3 pairs


def test_bootstrap_interval_holds_the_estimate_and_is_seeded() -> None:
    units = [(1, 1), (2, 2), (3, 3), (4, 3), (5, 5), (1, 2), (2, 1), (4, 4)]

    def stat(sample: list[tuple[int, int]]) -> float | None:
        return cohen_kappa([a for a, _ in sample], [b for _, b in sample], "quadratic")

    low, high = bootstrap_units(units, stat, 300, 1)  # type: ignore[arg-type]
    assert low <= stat(units) <= high
    assert (low, high) == bootstrap_units(units, stat, 300, 1)  # type: ignore[arg-type]


def test_judge_verdicts_are_none_without_files_and_read_when_present(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert load_judge_verdicts(run) is None
    folder = tmp_path / "eval" / "judge"
    folder.mkdir(parents=True)
    # The evaluate stage's format: one file per candidate, one record per judged example.
    asked = {"candidate_first": {"reply": "A"}, "candidate_second": {"reply": "B"}}
    write_records(
        folder / "distilled.jsonl",
        [
            JudgeRecord.model_validate(
                {"id": i, "pairwise": {"vs": "teacher", "outcome": o, "flipped": False, **asked}}
            )
            for i, o in (("r1", "win"), ("r2", None))
        ],
    )
    verdicts = load_judge_verdicts(run)
    assert verdicts is not None
    assert verdicts.pairwise == {("r1", "distilled"): "win"}
    assert verdicts.pointwise == {}
    assert verdicts.opponent == "teacher"
