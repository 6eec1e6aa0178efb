import math

import numpy as np
import pytest

from potstill.evaluate.stats import (
    bootstrap_ci,
    mcnemar_exact,
    metric_entry,
    paired_bootstrap,
    paired_comparison,
    spearman,
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
    comp = paired_bootstrap(a, b, samples=500, seed=0)
    assert comp["difference"] == 1.0 and comp["ci_low"] == comp["ci_high"] == 1.0
    noisy = paired_bootstrap(a, list(reversed(a)), samples=500, seed=0)
    assert noisy["ci_low"] < 0 < noisy["ci_high"]


def test_metric_entry_and_spearman() -> None:
    entry = metric_entry([1.0, 0.0, 1.0, 1.0], samples=200, seed=0, percent=True)
    assert entry["value"] == 0.75 and entry["n"] == 4 and entry["percent"]
    assert entry["ci_low"] <= 0.75 <= entry["ci_high"]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Tied x get their average rank 2.5: rho = 4.5 / sqrt(4.5 * 5).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [2, 1]) is None
