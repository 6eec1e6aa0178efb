"""The verdict at the top of the report: per trained student, what the evidence shows against
its base student and the teacher on the headline ground-truth metric, and at what cost.

Pure: it reads the scores data as evaluate writes it (scores.json) and returns lines of text;
the templates only print them. The rules:

- The headline metric is the task's first metric (ground truth: accuracy, ROUGE-L, ...),
  never the LLM judge's scores. A set without it (no references) gets no verdict, and says
  why.
- A comparison is **better** / **worse** when the 95% interval of the paired difference
  lies wholly on one side of zero (in the metric's direction), else **not
  distinguishable**. Fewer than `MIN_PAIRED` paired examples, or an interval that is a
  single point or missing, gives **too few examples to tell** / **cannot tell**, with the
  numbers still shown.
- Candidates with the same `identity` (the same model asked with the same prompt) are
  shown once, under the first name, with a note naming the others.
- A guard rail that fired (`guards.py`: a student with too few rows or steps, a flat loss; a
  teacher whose yield is low or who gives one answer to nearly every input) is repeated under
  the student, or as a note of every set, since it says the comparison may mean little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from potstill.evaluate.stats import degenerate
from potstill.figures import percent as as_percent

# Below this many paired examples an interval of a difference is too wide to decide
# anything a user would act on: at 30 pairs, two candidates right on half the examples who
# disagree on half of them still span ±24 points (Newcombe's interval).
MIN_PAIRED = 30

INTERVAL_NOTE = (
    "Intervals are 95%: Wilson score for a rate of right answers, Newcombe's hybrid score "
    "interval for a paired difference of such rates, percentile bootstrap for other metrics. "
    f"A verdict needs at least {MIN_PAIRED} paired examples with a reference; the LLM judge's "
    "scores are never used for it."
)


@dataclass(frozen=True)
class StudentVerdict:
    """One student on one evaluation set: a headline line and one line per comparison."""

    head: str
    lines: list[str]


@dataclass(frozen=True)
class SetVerdict:
    """The verdict block of one evaluation set (the test split or a transfer set)."""

    title: str
    students: list[StudentVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.4g}"


def _fmt(x: float, percent: bool) -> str:
    """A metric's value as the report's tables write it."""
    return as_percent(x) if percent else f"{x:.3g}"


def _value(entry: dict[str, Any]) -> str:
    """A metric's value with its interval and n."""
    percent = bool(entry.get("percent"))
    low, high = _fmt(entry["ci_low"], percent), _fmt(entry["ci_high"], percent)
    text = f"{_fmt(entry['value'], percent)} [{low}, {high}]"
    flag = " (degenerate interval: it says nothing)" if _flat(entry) else ""
    return f"{text}, n = {entry['n']}{flag}"


def _flat(entry: dict[str, Any]) -> bool:
    return bool(entry.get("n")) and degenerate(entry.get("ci_low"), entry.get("ci_high"))


def _difference(comp: dict[str, Any], percent: bool) -> str:
    def fmt(x: float) -> str:
        return f"{100 * x:+.1f}" if percent else f"{x:+.3g}"

    unit = " pts" if percent else ""
    return (
        f"{fmt(comp['difference'])}{unit} [{fmt(comp['ci_low'])}, {fmt(comp['ci_high'])}]"
        f" on {comp['n']} paired examples"
    )


def verdict_word(comp: dict[str, Any], higher_is_better: bool = True) -> tuple[str, str]:
    """(word, why) for one paired comparison of the headline metric: better / worse / not
    distinguishable, or too few examples to tell / cannot tell when the interval says
    nothing (`why` then says so)."""
    n, low, high = comp.get("n") or 0, comp.get("ci_low"), comp.get("ci_high")
    if n == 0 or _is_nan(comp.get("difference")):
        return "cannot tell", "no example with a reference is scored for both"
    if degenerate(low, high):
        return "cannot tell", (
            "the interval is a single point (every paired difference is the same), which "
            "says nothing about other examples"
        )
    if n < MIN_PAIRED:
        return "too few examples to tell", f"a verdict needs at least {MIN_PAIRED}"
    assert low is not None and high is not None
    if low > 0 or high < 0:
        gain = low > 0
        return ("better" if gain == higher_is_better else "worse"), ""
    return "not distinguishable", ""


# Of candidates that are one and the same, the name shown is the first in this order of
# roles (a verdict is about students, against their base student, then the teacher).
_ROLE_ORDER = ("student", "base_student", "teacher")


def same_candidates(candidates: dict[str, Any], order: list[str]) -> dict[str, list[str]]:
    """Each shown candidate's name -> every name with its identity (itself first): the
    same model asked with the same prompt is shown once, in the verdict and the tables."""
    groups: dict[str, list[str]] = {}
    first: dict[str, str] = {}

    def rank(name: str) -> int:
        role = candidates.get(name, {}).get("role")
        return _ROLE_ORDER.index(role) if role in _ROLE_ORDER else len(_ROLE_ORDER)

    for name in sorted(order, key=rank):
        identity = candidates.get(name, {}).get("identity") or name
        shown = first.setdefault(identity, name)
        groups.setdefault(shown, []).append(name)
    return groups


def _cost(name: str, cand: dict[str, Any]) -> str:
    tokens = cand.get("mean_completion_tokens")
    latency = cand.get("mean_latency_s")
    parts = [f"{_money(cand.get('cost_per_1k_requests'))} per 1,000 answers"]
    if cand.get("cost_per_1k_requests") is None and cand.get("cost_basis"):
        parts[0] += f" ({cand['cost_basis']})"
    if tokens is not None:
        parts.append(f"{tokens:.1f} generated tokens")
    if latency is not None:
        parts.append(f"{latency:.3g} s latency per answer")
    return f"{name} " + ", ".join(parts)


def _cost_line(student: str, candidates: dict[str, Any], teacher: str | None) -> str:
    line = "cost: " + _cost(student, candidates[student])
    if teacher is not None and teacher in candidates:
        line += "; " + _cost(teacher, candidates[teacher])
        mine = candidates[student].get("cost_per_1k_requests")
        theirs = candidates[teacher].get("cost_per_1k_requests")
        if mine is not None and theirs:
            share = 100 * mine / theirs  # two significant digits, never an exponent
            line += (
                f" ({share:.2g}% of the teacher's cost)"
                if share < 100
                else (f" ({share:.0f}% of the teacher's cost)")
            )
    bases = {candidates[n].get("cost_basis") for n in (student, teacher) if n in candidates}
    if len(bases - {None}) > 1:
        line += "; priced on different bases: see the cost section"
    return line


def _student(
    name: str,
    entry: dict[str, Any],
    headline: str,
    groups: dict[str, list[str]],
    shown_as: dict[str, str],
    teacher: str | None,
    cautions: list[dict[str, Any]],
) -> StudentVerdict:
    candidates = entry["candidates"]
    mine = candidates[name].get("metrics", {}).get(headline)
    head = f"{name}: {headline} {_value(mine)}" if mine else f"{name}: no {headline}"
    higher = bool(mine.get("higher_is_better", True)) if mine else True
    percent = bool(mine.get("percent")) if mine else False
    lines = []
    seen: set[str] = set()
    for comp in (c for c in entry.get("comparisons", []) if c["a"] == name):
        other = shown_as.get(comp["b"], comp["b"])
        if other in seen:
            continue
        seen.add(other)
        word, why = verdict_word(comp, higher)
        theirs = candidates.get(other, {}).get("metrics", {}).get(headline)
        about = [_fmt(theirs["value"], percent)] if theirs else []
        also = [n for n in groups.get(other, [other]) if n != other]
        about += [f"also {', '.join(also)}"] if also else []
        label = other + (f" ({'; '.join(about)})" if about else "")
        numbers = f", {_difference(comp, percent)}" if comp.get("n") else ""
        lines.append(f"vs {label}: {word}{numbers}" + (f" — {why}" if why else ""))
    lines.append(_cost_line(name, candidates, teacher))
    lines += [
        f"caution: {w['message']}"
        for w in cautions
        if w.get("subject") == name and str(w.get("check", "")).startswith("student_")
    ]
    return StudentVerdict(head, lines)


def set_verdict(
    entry: dict[str, Any],
    title: str,
    headline: str,
    order: list[str],
    cautions: list[dict[str, Any]] | None = None,
) -> SetVerdict:
    """The verdict block of one evaluation set: scores.json's top level (the test split) or
    one entry of its `transfer` mapping, `order` the candidates' evaluation order; `cautions`
    the run's warnings (scores.json `warnings`), of which the guard rails are repeated."""
    cautions = entry.get("warnings", []) if cautions is None else cautions
    candidates = entry.get("candidates", {})
    order = [n for n in order if n in candidates] or list(candidates)
    students = [n for n in order if candidates[n].get("role") == "student"]
    if not students:
        return SetVerdict(title, notes=["No verdict: the run has no trained student."])
    if not any(headline in c.get("metrics", {}) for c in candidates.values()):
        return SetVerdict(
            title,
            notes=[
                f"No verdict: {headline}, the task's headline ground-truth metric, needs a "
                "reference answer and no example of this set has one. The LLM judge's "
                "scores are not ground truth and are not used for a verdict."
            ],
        )
    groups = same_candidates(candidates, order)
    shown_as = {n: shown for shown, names in groups.items() for n in names}
    teacher = next((n for n in order if candidates[n].get("role") == "teacher"), None)
    block = SetVerdict(title)
    for name in students:
        if shown_as[name] != name:
            continue
        block.students.append(_student(name, entry, headline, groups, shown_as, teacher, cautions))
    for shown, names in groups.items():
        if len(names) > 1:
            block.notes.append(
                f"{' and '.join([', '.join(names[:-1]), names[-1]])} are the same model asked "
                f"with the same prompt (their answers are the same): shown once, as {shown}."
            )
    block.notes.extend(
        f"Caution, the training data: {w['message']}"
        for w in cautions
        if w.get("subject") == "teacher" and str(w.get("check", "")).startswith("teacher_")
    )
    return block


def verdicts(scores: dict[str, Any], transfer_order: list[str] | None = None) -> list[SetVerdict]:
    """The test split's verdict, then one per transfer set (in `transfer_order`, the
    config's order, when given)."""
    headline = scores.get("headline") or (scores.get("metric_order") or ["accuracy"])[0]
    order = scores.get("order") or list(scores.get("candidates", {}))
    cautions = scores.get("warnings", [])
    found = [set_verdict(scores, f"Test split ({_examples(scores)})", headline, order, cautions)]
    transfer = scores.get("transfer", {})
    names = [t for t in transfer_order or [] if t in transfer]
    names += sorted(t for t in transfer if t not in names)
    for name in names:
        title = f"Transfer set {name} ({_examples(transfer[name])})"
        found.append(set_verdict(transfer[name], title, headline, order, cautions))
    return found


def _examples(entry: dict[str, Any]) -> str:
    """How many examples a set has: a transfer set's `n`, the test split's reference check."""
    n = entry.get("n", (entry.get("checks", {}).get("references") or {}).get("examples"))
    return f"{n} examples" if n is not None else "size not recorded"
