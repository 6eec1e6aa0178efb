"""The adapter that reads the LLM judge's verdicts (`eval/judge/`) for judge-human agreement.

The agreement coefficients themselves (Cohen's kappa, Krippendorff's alpha, Spearman, the
bootstrap over units) are in `evaluate/stats.py`, with every other statistic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from potstill.records import JudgeRecord, read_records
from potstill.runs import RunFolder


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
        for row in read_records(path, JudgeRecord):
            key = (row.id, candidate)
            if row.pointwise is not None and row.pointwise.score is not None:
                found.pointwise[key] = float(row.pointwise.score)
            pair = row.pairwise
            if pair is not None and pair.outcome in ("win", "tie", "loss"):
                found.pairwise[key] = pair.outcome
                found.opponent = pair.vs
    return found
