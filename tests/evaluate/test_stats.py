import math

import numpy as np
import pytest

from potstill.evaluate.stats import (
    bootstrap_ci,
    degenerate,
    mcnemar_exact,
    mean_interval,
    metric_entry,
    newcombe_paired_interval,
    paired_comparison,
    paired_difference,
    spearman,
    wilson_interval,
)


def test_bootstrap_interval_brackets_the_mean() -> None:
    scores = [1.0] * 60 + [0.0] * 40
    low, high = bootstrap_ci(scores, samples=2000, seed=0)
    assert low < 0.6 < high
    assert low > 0.45 and high < 0.75


def test_paired_comparison_sees_a_clear_gain() -> None:
    base = [0.0] * 100
    better = [1.0] * 40 + [0.0] * 60
    comp = paired_comparison(better, base, samples=1000, seed=0)
    assert comp["difference"] == 0.4
    assert comp["ci_low"] > 0
    assert comp["a_only_correct"] == 40 and comp["b_only_correct"] == 0
    assert comp["mcnemar_p"] < 1e-6


def test_mcnemar_is_one_when_nothing_differs() -> None:
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0


def test_bootstrap_interval_matches_the_binomial_interval() -> None:
    # 120 right of 400: the binomial standard error is sqrt(.3 * .7 / 400) = 0.0229, so the
    # 95% interval is 0.3 +- 0.0449. The percentile bootstrap of the mean must agree.
    low, high = bootstrap_ci([1.0] * 120 + [0.0] * 280, samples=4000, seed=1)
    half = 1.959964 * math.sqrt(0.3 * 0.7 / 400)
    assert low == pytest.approx(0.3 - half, abs=0.006)
    assert high == pytest.approx(0.3 + half, abs=0.006)


def test_bootstrap_interval_covers_the_true_rate_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    for rep in range(300):
        sample = (rng.random(150) < 0.3).astype(float)
        low, high = bootstrap_ci(sample, samples=1000, seed=rep)
        hits += low <= 0.3 <= high
    # Binomial(300, 0.95) lies in [0.91, 0.98] with probability above 99.5%.
    assert 0.91 <= hits / 300 <= 0.98


def _table(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[int], list[int]]:
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return a, b


def test_mcnemar_on_hand_built_tables() -> None:
    # Discordant pairs 10 vs 2: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * 79 / 4096.
    a, b = _table(both=30, only_a=10, only_b=2, neither=8)
    assert mcnemar_exact(a, b) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact(b, a) == mcnemar_exact(a, b)  # two-sided
    # 0 vs 6: p = 2 / 64; 5 vs 5: p = 1; concordant pairs never matter.
    assert mcnemar_exact(*_table(both=3, only_a=0, only_b=6, neither=90)) == pytest.approx(2 / 64)
    assert mcnemar_exact(*_table(both=0, only_a=5, only_b=5, neither=0)) == 1.0
    comp = paired_comparison(a, b, samples=500, seed=0)
    assert (comp["a_only_correct"], comp["b_only_correct"]) == (10, 2)
    assert comp["difference"] == pytest.approx(8 / 50)


def test_paired_bootstrap_of_a_continuous_score() -> None:
    a = [3.0, 4.0, 5.0, 4.0, 3.0, 5.0, 4.0, 4.0] * 5
    b = [x - 1.0 for x in a]
    comp = paired_difference(a, b, samples=500, seed=0)
    assert comp["difference"] == 1.0 and comp["ci_low"] == comp["ci_high"] == 1.0
    assert comp["interval"] == "bootstrap" and "mcnemar_p" not in comp
    # Every difference the same: the bootstrap collapses to a point, which says nothing.
    assert degenerate(comp["ci_low"], comp["ci_high"])
    noisy = paired_difference(a, list(reversed(a)), samples=500, seed=0)
    assert noisy["ci_low"] < 0 < noisy["ci_high"]
    assert not degenerate(noisy["ci_low"], noisy["ci_high"])


def test_metric_entry_and_spearman() -> None:
    entry = metric_entry([1.0, 0.0, 1.0, 1.0], samples=200, seed=0, percent=True)
    assert entry["value"] == 0.75 and entry["n"] == 4 and entry["percent"]
    assert entry["ci_low"] <= 0.75 <= entry["ci_high"]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Tied x get their average rank 2.5: rho = 4.5 / sqrt(4.5 * 5).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [2, 1]) is None


def test_wilson_interval_at_the_edges_and_against_the_textbook_value() -> None:
    # 3 of 10: the textbook Wilson interval is [0.108, 0.603].
    low, high = wilson_interval(3, 10)
    assert (round(low, 3), round(high, 3)) == (0.108, 0.603)
    # 0% and 100% keep an interval of real width, unlike the bootstrap's [0, 0] and [1, 1].
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert bootstrap_ci([0.0] * 10, samples=200, seed=0) == (0.0, 0.0)
    # One example says almost nothing; none says nothing at all.
    assert wilson_interval(1, 1) == (pytest.approx(0.2065, abs=1e-4), 1.0)
    assert wilson_interval(0, 0) == (None, None)  # undefined is None, never NaN


def test_wilson_covers_a_rare_rate_where_the_bootstrap_does_not() -> None:
    rng = np.random.default_rng(3)
    wilson = bootstrap = 0
    for rep in range(300):
        sample = (rng.random(40) < 0.03).astype(float)
        low, high = wilson_interval(int(sample.sum()), 40)
        wilson += low <= 0.03 <= high
        low, high = bootstrap_ci(sample, samples=300, seed=rep)
        bootstrap += low <= 0.03 <= high
    # About 30% of the samples have no hit, and the bootstrap's [0, 0] misses the rate.
    assert wilson / 300 >= 0.93 and bootstrap / 300 < 0.8


def test_mean_interval_is_wilson_for_right_or_wrong_scores_and_bootstrap_otherwise() -> None:
    assert mean_interval([1.0] * 5, 200, 0) == (pytest.approx(0.5655, abs=1e-4), 1.0, "wilson")
    low, high, method = mean_interval([0.2, 0.4, 0.9], 200, 0)
    assert method == "bootstrap" and low < 0.5 < high
    assert metric_entry([0.0, 0.0], 200, 0)["interval"] == "wilson"


def test_newcombe_paired_interval_at_the_edges_and_on_ties() -> None:
    # Both candidates right on all 10 (a tie at 100%): zero, with an interval of real width.
    low, high = newcombe_paired_interval(both=10, a_only=0, b_only=0, neither=0)
    assert low == pytest.approx(-0.2775, abs=1e-4) and high == pytest.approx(0.2775, abs=1e-4)
    # Both wrong on all 10 (a tie at 0%): the same.
    assert newcombe_paired_interval(0, 0, 0, 10) == pytest.approx((-0.2775, 0.2775), abs=1e-4)
    # One example, a right and b wrong: +100 points, and an interval that includes zero.
    low, high = newcombe_paired_interval(0, 1, 0, 0)
    assert low < 0 and high == 1.0
    # The worked example of Fagerland, Lydersen & Laake (Statistical Analysis of Contingency
    # Tables, ch. 8; Cavo et al., 2012), as the R package contingencytables tests it:
    # 59 / 6 / 16 / 80 gives -0.0621 (95% CI -0.1186 to -0.0046).
    low, high = newcombe_paired_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    assert newcombe_paired_interval(0, 0, 0, 0) == (None, None)


def test_newcombe_paired_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(300):
        a = (rng.random(60) < 0.9).astype(float)
        # b agrees with a on most examples (paired data are correlated), true rate 0.85
        flip = rng.random(60)
        b = np.where(a == 1, (flip > 0.1).astype(float), (flip < 0.45).astype(float))
        comp = paired_difference(list(a), list(b))
        hits += comp["ci_low"] <= 0.9 - (0.9 * 0.9 + 0.1 * 0.45) <= comp["ci_high"]
    assert hits / 300 >= 0.92


def test_paired_difference_of_right_or_wrong_scores_is_newcombe_with_counts() -> None:
    a, b = _table(both=30, only_a=10, only_b=2, neither=8)
    comp = paired_difference(a, b)
    assert comp["interval"] == "newcombe" and comp["difference"] == pytest.approx(8 / 50)
    assert (comp["both_correct"], comp["a_only_correct"], comp["b_only_correct"]) == (30, 10, 2)
    assert (comp["ci_low"], comp["ci_high"]) == newcombe_paired_interval(30, 10, 2, 8)
    assert comp["mcnemar_p"] == mcnemar_exact(a, b)
    # A tie at 100%: the bootstrap said 0 [0, 0]; Newcombe does not collapse.
    tie = paired_difference([1.0] * 12, [1.0] * 12)
    assert tie["difference"] == 0 and not degenerate(tie["ci_low"], tie["ci_high"])


def test_every_undefined_figure_is_none_never_nan() -> None:
    from potstill.evaluate.stats import (
        bootstrap_units,
        cohen_kappa,
        krippendorff_alpha,
        percentile_interval,
    )

    assert bootstrap_ci([]) == (None, None)
    assert percentile_interval([]) == (None, None)
    assert bootstrap_units([], lambda s: 1.0) == (None, None)
    assert bootstrap_units([1, 1], lambda s: None) == (None, None)  # every resample undefined
    assert krippendorff_alpha([[1, 1], [1, 1]]) is None
    assert cohen_kappa([], []) is None
    entry = metric_entry([], samples=10, seed=0)
    assert entry["value"] is None and entry["ci_low"] is None and entry["ci_high"] is None
    assert paired_difference([], [])["difference"] is None
