"""The report shows human figures only when grades exist."""

from collections.abc import Callable

from potstill.grade.rounds import open_round
from potstill.report.stage import run_report
from potstill.runs import RunFolder

from .test_commands import grade_all


def test_report_gains_a_human_section_once_grades_exist(
    make_run: Callable[..., RunFolder],
) -> None:
    run = make_run({"size": 6, "overlap": 6, "modes": ["pointwise"]})
    run_report(run, run.load_config())
    assert "Human grading" not in (run.root / "report.md").read_text()
    grading = open_round(run, run.load_config())
    run_report(run, run.load_config())  # a round with no grades yet adds nothing
    assert "Human grading" not in (run.root / "report.md").read_text()
    grade_all(grading, "ann", lambda e, c: 5 if c == "distilled" else 3)
    grade_all(grading, "bob", lambda e, c: 5 if c == "distilled" else 3 if e < "r08" else 2)
    run_report(run, run.load_config())
    report = (run.root / "report.md").read_text()
    assert "## Human grading" in report
    assert "| distilled | 4.50 [4.50, 4.50] |" in report
    assert "| pointwise | Cohen's kappa" in report
    assert "No judge verdicts in this run" in report
    page = (run.root / "report.html").read_text()
    assert '<section id="human-grading">' in page and "&lt;section" not in page
