"""How potstill writes a figure for people to read: one rule for a rate as a percentage and
one for a plain number, an undefined figure written `n/a` by both, shared by every stage's
messages, the report, the data card and the grading pages; and the one way their pages'
templates are loaded."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


def _undefined(value: float | None) -> bool:
    # None, or NaN from a file written before None was the rule for a missing figure.
    return value is None or math.isnan(value)


def percent(value: float | None) -> str:
    """A rate in [0, 1] as a percentage with one decimal (`0.125` -> `12.5%`); an undefined
    figure as `n/a`."""
    return "n/a" if _undefined(value) else f"{100 * value:.1f}%"  # type: ignore[operator]


def number(value: float | None, spec: str = ".2f") -> str:
    """A figure in the format `spec` (`.2f`: two decimals, `0.6667` -> `0.67`; `.3g`: three
    significant digits, as the report's tables); an undefined one as `n/a`."""
    return "n/a" if _undefined(value) else format(value, spec)


def template_environment(folder: str, **filters: Callable[..., Any]) -> Environment:
    """The Jinja environment of the package's templates in `folder` (HTML autoescaped, block
    tags trimmed), with `filters` and `pct` (`percent`) among them."""
    env = Environment(
        loader=PackageLoader("potstill", folder),
        autoescape=select_autoescape(["html", "html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({"pct": percent, **filters})
    return env
