"""The adapter that reads the LLM judge's verdicts (`eval/judge/`) for judge-human agreement.

The agreement coefficients themselves (Cohen's kappa, Krippendorff's alpha, Spearman, the
bootstrap over units) are in `evaluate/stats.py`, with every other statistic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from potstill.runs import RunFolder, read_jsonl


@dataclass
class JudgeVerdicts:
    """The LLM judge's verdicts, keyed by (example id, candidate)."""

    pointwise: dict[tuple[str, str], float] = field(default_factory=dict)
    pairwise: dict[tuple[str, str], str] = field(default_factory=dict)
    opponent: str = "teacher"


def load_judge_verdicts(run: RunFolder) -> JudgeVerdicts | None:
    """The LLM judge's verdicts from eval/judge/, or None when the run has none.

    The evaluate stage writes one file per candidate, `eval/judge/<candidate>.jsonl`, one
    object per judged example: `{"id": str, "pointwise": {"score": int | None, ...},
    "pairwise": {"vs": str, "outcome": "win" | "tie" | "loss" | None, ...}}` (either part
    may be missing). The score is the judge's overall rubric score (compared with the humans
    by rank); the outcome is the candidate's result against `vs` after asking in both orders
    (a verdict that flips is a tie). Entries without a score or outcome (a judge reply that
    could not be read) are skipped.
    """
    folder = run.eval_dir / "judge"
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not paths:
        return None
    found = JudgeVerdicts()
    for path in paths:
        candidate = path.stem
        for row in read_jsonl(path):
            key = (str(row["id"]), candidate)
            point = row.get("pointwise") or {}
            if point.get("score") is not None:
                found.pointwise[key] = float(point["score"])
            pair = row.get("pairwise") or {}
            if pair.get("outcome") in ("win", "tie", "loss"):
                found.pairwise[key] = str(pair["outcome"])
                found.opponent = str(pair.get("vs", "teacher"))
    return found
