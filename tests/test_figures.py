"""The one percent formatter."""

import math

from potstill.figures import percent


def test_percent_has_one_decimal_and_says_n_a_for_an_undefined_figure() -> None:
    assert percent(0.125) == "12.5%"
    assert percent(0.0) == "0.0%" and percent(1.0) == "100.0%"
    assert percent(None) == "n/a" and percent(math.nan) == "n/a"
