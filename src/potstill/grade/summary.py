"""The human figures: per-candidate scores with intervals, agreement between graders, and
agreement between the graders and the LLM judge. One dict, rendered by the admin page,
`potstill grade RUN --summary` and the report."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from jinja2 import Environment
from markupsafe import Markup

from potstill.evaluate.stats import (
    bootstrap_units,
    cohen_kappa,
    krippendorff_alpha,
    mean_interval,
    metric_entry,
    spearman,
)
from potstill.figures import number, percent, template_environment
from potstill.grade.agreement import JudgeVerdicts, load_judge_verdicts
from potstill.grade.rounds import evaluation_order, grades_path
from potstill.grade.store import GradeStore
from potstill.runs import RunFolder

VERDICT_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
# Below these, the report warns that the judge and the humans disagree.
JUDGE_AGREEMENT_FLOOR = 0.6
JUDGE_SPEARMAN_FLOOR = 0.3

Unit = dict[str, Hashable]  # grader name -> rating


def _per_example(values: dict[str, list[float]]) -> list[float]:
    """Average the graders of each example, so an example graded twice counts once."""
    return [float(np.mean(v)) for _, v in sorted(values.items())]


def _overall(grade: dict[str, Any]) -> float:
    return float(np.mean(list(grade["scores"].values())))


def candidate_scores(
    grades: list[dict[str, Any]], samples: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pointwise: per candidate and criterion (and overall), the mean score over examples.
    Pairwise: per candidate, wins/ties/losses and the win rate (a tie counts half)."""
    point: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    pair: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    opponents: dict[str, str] = {}
    for g in grades:
        if g["mode"] == "pointwise":
            for criterion, score in g["scores"].items():
                point[g["candidate"]][criterion][g["example_id"]].append(float(score))
            point[g["candidate"]]["overall"][g["example_id"]].append(_overall(g))
        else:
            pair[g["candidate"]][g["example_id"]].append(VERDICT_VALUE[g["verdict"]])
            counts[g["candidate"]][g["verdict"]] += 1
            opponents[g["candidate"]] = g["opponent"]
    pointwise = {
        cand: {c: metric_entry(_per_example(v), samples, seed) for c, v in by_criterion.items()}
        for cand, by_criterion in point.items()
    }
    pairwise = {
        cand: {
            "opponent": opponents[cand],
            "wins": counts[cand]["win"],
            "ties": counts[cand]["tie"],
            "losses": counts[cand]["loss"],
            "win_rate": metric_entry(_per_example(v), samples, seed, percent=True),
        }
        for cand, v in pair.items()
    }
    return pointwise, pairwise


def _units(grades: list[dict[str, Any]], mode: str) -> dict[tuple[Any, ...], Unit]:
    """Ratings per unit (pointwise: example, candidate, criterion; pairwise: example,
    candidate), keeping only units that several graders rated."""
    units: dict[tuple[Any, ...], Unit] = defaultdict(dict)
    for g in grades:
        if g["mode"] != mode:
            continue
        if mode == "pointwise":
            for criterion, score in g["scores"].items():
                units[(g["example_id"], g["candidate"], criterion)][g["grader"]] = score
        else:
            units[(g["example_id"], g["candidate"])][g["grader"]] = g["verdict"]
    return {k: u for k, u in units.items() if len(u) >= 2}


def _coefficient(units: Sequence[Unit], graders: list[str], level: str) -> float | None:
    if len(graders) == 2:
        a = [u[graders[0]] for u in units if len(u) == 2]
        b = [u[graders[1]] for u in units if len(u) == 2]
        return cohen_kappa(a, b)
    return krippendorff_alpha([list(u.values()) for u in units], level)  # type: ignore[arg-type]


def inter_grader(
    grades: list[dict[str, Any]], mode: str, samples: int, seed: int
) -> dict[str, Any] | None:
    """Cohen's kappa when two graders overlap, Krippendorff's alpha (ordinal for scores,
    nominal for verdicts) when more do; interval by resampling graded answers."""
    units = _units(grades, mode)
    if not units:
        return None
    graders = sorted({name for u in units.values() for name in u})
    level = "ordinal" if mode == "pointwise" else "nominal"
    # Resample whole answers: a pointwise answer's criteria are not independent units.
    clusters: dict[tuple[Any, ...], list[Unit]] = defaultdict(list)
    for key, unit in units.items():
        clusters[key[:2]].append(unit)
    grouped = [clusters[key] for key in sorted(clusters)]  # the same figures on every call

    def statistic(sample: Sequence[list[Unit]]) -> float | None:
        return _coefficient([u for c in sample for u in c], graders, level)

    value = statistic(grouped)
    low, high = bootstrap_units(grouped, statistic, samples, seed)
    pairs = [pair for u in units.values() for pair in combinations(u.values(), 2)]
    found: dict[str, Any] = {
        "method": "Cohen's kappa" if len(graders) == 2 else f"Krippendorff's alpha ({level})",
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "n_units": len(units),
        "n_answers": len(grouped),
        "graders": graders,
        "raw_agreement": sum(x == y for x, y in pairs) / len(pairs),
    }
    if len(graders) == 2 and mode == "pointwise":
        a = [u[graders[0]] for u in units.values()]
        b = [u[graders[1]] for u in units.values()]
        found["weighted_kappa"] = cohen_kappa(a, b, "quadratic")
    return found


def _consensus(verdicts: list[str]) -> str:
    """The majority verdict; no strict majority is a tie."""
    top = Counter(verdicts).most_common()
    if len(top) > 1 and top[0][1] == top[1][1]:
        return "tie"
    return top[0][0]


def judge_agreement(
    grades: list[dict[str, Any]], judge: JudgeVerdicts, samples: int, seed: int
) -> dict[str, Any]:
    """How often the judge's pairwise verdict matches the graders' majority, and the rank
    correlation of its pointwise score with the graders' mean score."""
    found: dict[str, Any] = {"pairwise": None, "pointwise": None, "opponent": judge.opponent}
    human_verdicts: dict[tuple[str, str], list[str]] = defaultdict(list)
    human_scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for g in grades:
        key = (g["example_id"], g["candidate"])
        if g["mode"] == "pairwise" and g["opponent"] == judge.opponent:
            human_verdicts[key].append(g["verdict"])
        elif g["mode"] == "pointwise":
            human_scores[key].append(_overall(g))
    paired = [
        (judge.pairwise[k], _consensus(v))
        for k, v in sorted(human_verdicts.items())
        if k in judge.pairwise
    ]
    if paired:
        matches = [float(j == h) for j, h in paired]
        low, high, method = mean_interval(matches, samples, seed)
        found["pairwise"] = {
            "agreement": float(np.mean(matches)),
            "ci_low": low,
            "ci_high": high,
            "interval": method,
            "kappa": cohen_kappa([j for j, _ in paired], [h for _, h in paired]),
            "n": len(paired),
        }
    scored = [
        (judge.pointwise[k], float(np.mean(v)))
        for k, v in sorted(human_scores.items())
        if k in judge.pointwise
    ]
    if scored:
        low, high = bootstrap_units(scored, lambda s: spearman(*zip(*s)), samples, seed)
        found["pointwise"] = {
            "spearman": spearman([j for j, _ in scored], [h for _, h in scored]),
            "ci_low": low,
            "ci_high": high,
            "n": len(scored),
        }
    return found


def _warnings(summary: dict[str, Any]) -> list[str]:
    found = []
    judge = summary.get("judge") or {}
    pair, point = judge.get("pairwise"), judge.get("pointwise")
    if pair and pair["agreement"] < JUDGE_AGREEMENT_FLOOR:
        found.append(
            f"The LLM judge's pairwise verdict matches the graders' on only "
            f"{percent(pair['agreement'])} of {pair['n']} answers: trust its win rates less."
        )
    if point and point["spearman"] is not None and point["spearman"] < JUDGE_SPEARMAN_FLOOR:
        found.append(
            f"The LLM judge's scores hardly follow the graders' (Spearman "
            f"{point['spearman']:.2f} on {point['n']} answers)."
        )
    for mode, agreement in (summary.get("agreement") or {}).items():
        if agreement and agreement["value"] is not None and agreement["value"] < 0.2:
            found.append(
                f"Graders agree little on {mode} pages ({agreement['method']} "
                f"{agreement['value']:.2f}): the rubric may need clearer wording."
            )
    return found


def _in_order(found: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    ranked = [n for n in order if n in found] + sorted(n for n in found if n not in order)
    return {n: found[n] for n in ranked}


def summarize_grades(
    grades: list[dict[str, Any]],
    progress: list[dict[str, Any]],
    judge: JudgeVerdicts | None,
    samples: int = 1000,
    seed: int = 0,
    order: Sequence[str] = (),
) -> dict[str, Any]:
    """Every human figure of a round; candidates in `order` (the evaluation's) first."""
    pointwise, pairwise = candidate_scores(grades, samples, seed)
    pointwise, pairwise = _in_order(pointwise, order), _in_order(pairwise, order)
    summary: dict[str, Any] = {
        "n_grades": len(grades),
        "graders": progress,
        "criteria": list(dict.fromkeys(c for g in grades for c in g["scores"])),
        "pointwise": pointwise,
        "pairwise": pairwise,
        "agreement": {
            mode: inter_grader(grades, mode, samples, seed) for mode in ("pointwise", "pairwise")
        },
        "judge": None if judge is None else judge_agreement(grades, judge, samples, seed),
        "comments": [
            {k: g[k] for k in ("grader", "example_id", "candidate", "mode", "comment")}
            for g in grades
            if g["comment"]
        ][-20:],
    }
    summary["warnings"] = _warnings(summary)
    return summary


def human_summary(run: RunFolder, samples: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """The human figures of a run, or None when nobody has graded yet."""
    path = grades_path(run)
    if not path.exists():
        return None
    store = GradeStore(path)
    grades = store.grades()
    if not grades:
        return None
    judge = load_judge_verdicts(run)
    return summarize_grades(grades, store.progress(), judge, samples, seed, evaluation_order(run))


# -- rendering -----------------------------------------------------------------------------


def template_env() -> Environment:
    return template_environment("grade/templates", num=number)


def render_section(summary: dict[str, Any], fmt: str) -> str:
    """The human-grading section as Markdown (`md`) or HTML (`html`, escaped)."""
    env = template_env()
    if fmt == "html":
        return Markup(env.get_template("human.html.j2").render(h=summary))
    return env.get_template("human.md.j2").render(h=summary)
