from potstill.evaluate.stats import bootstrap_ci, mcnemar_exact, paired_comparison


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
