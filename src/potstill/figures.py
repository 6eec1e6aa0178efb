"""How potstill writes a figure for people to read: one rule for a rate as a percentage,
shared by every stage's messages, the report, the data card and the grading pages."""

from __future__ import annotations

import math


def percent(value: float | None) -> str:
    """A rate in [0, 1] as a percentage with one decimal (`0.125` -> `12.5%`); an undefined
    figure (None; NaN from a file written before that rule) as `n/a`."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f}%"
