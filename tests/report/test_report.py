"""The report from an evaluated run: every candidate and metric with intervals, the judge, cost,
warnings and disagreements; report.html is self-contained and renders in headless Chromium."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from run_records import train_log

from potstill.config import parse_config
from potstill.evaluate.stage import run_evaluate
from potstill.pipeline import prepare_split
from potstill.records import write_records
from potstill.report.stage import run_report
from potstill.tasks import build_task

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CANDIDATES = ["teacher", "teacher_zero_shot", "base_student", "distilled"]
METRICS = ["accuracy", "flexible_accuracy", "judge_score", "judge_win_rate"]


def _reported_run(make_evaluated_run: Callable[..., Any]) -> Any:
    run, config = make_evaluated_run()
    run_evaluate(run, config, build_task(config.task), prepare_split(run, config).test)
    log = train_log(*({"step": s, "loss": 3.0 / s, "epoch": s / 4} for s in range(1, 9)))
    write_records(run.student_dir("distilled") / "train_log.jsonl", log)
    run_report(run, config)
    return run


def test_report_shows_every_candidate_metric_judge_figure_and_cost(
    make_evaluated_run: Callable[..., Any],
) -> None:
    run = _reported_run(make_evaluated_run)
    md = (run.root / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| candidate | role"))
    assert all(f"{m} [95% CI]" in header for m in METRICS)
    for name in CANDIDATES:
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} | "))
        assert row.count("[") >= 3  # accuracy, flexible accuracy and judge score intervals
    scores = json.loads((run.eval_dir / "scores.json").read_text())
    teacher = scores["candidates"]["teacher"]["metrics"]["accuracy"]
    assert f"{100 * teacher['value']:.1f}% [{100 * teacher['ci_low']:.1f}%" in md
    assert "vs teacher: win / tie / loss" in md and "position-flip rate" in md
    assert "seeded sample of **6 of 8**" in md
    assert "cost per 1,000 requests" in md and "local compute at $0.1/hour" in md
    assert "## Where the candidates disagree" in md and md.count("\n### ") >= 3
    for plot in ("metric_accuracy", "metric_judge_score", "accuracy_vs_cost", "training_loss"):
        assert f"(plots/{plot}.png)" in md and (run.root / "plots" / f"{plot}.png").stat().st_size
    html = (run.root / "report.html").read_text()
    # One plot per metric, accuracy against cost, training loss; all inlined.
    assert html.count('src="data:image/png;base64,') == len(METRICS) + 2
    # A candidate's reply is text in the page, never markup.
    assert "<script>window.pwned" not in html and "&lt;script&gt;window.pwned" in html


@pytest.mark.slow
def test_report_html_renders_offline_in_headless_chromium(
    make_evaluated_run: Callable[..., Any],
) -> None:
    from playwright.sync_api import sync_playwright

    run = _reported_run(make_evaluated_run)
    page_path: Path = run.root / "report.html"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            table = page.locator("table#comparison")
            assert table.is_visible()
            assert table.locator("tr").count() == 1 + len(CANDIDATES)
            heads = table.locator("th").all_inner_texts()
            assert all(f"{m} [95% CI]" in heads for m in METRICS)
            assert (
                page.locator("table#judge").is_visible() and page.locator("table#cost").is_visible()
            )
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
            )
            assert len(images) == len(METRICS) + 2 and all(
                done and width > 0 for done, width, _ in images
            )
            assert page.evaluate("window.pwned === undefined")  # the reply's script never ran
            assert "<script>window.pwned = 1</script>" in page.inner_text("body")
            # Self-contained: the page itself and inline data, nothing fetched from elsewhere.
            assert fetched and all(u.startswith(("file://", "data:")) for u in fetched)
        finally:
            browser.close()


def test_a_judge_that_fails_its_checks_leaves_the_tables_and_the_report_says_why(
    make_evaluated_run: Callable[..., Any], scripted_endpoint: tuple[str, Any]
) -> None:
    url, _ = scripted_endpoint
    # The gullible judge follows the injector's "Verdict: A" in whichever place it stands: its
    # 6 comparisons of the injector flip, 6 of the 24 pairs; the limit here is 20%.
    extra = f"{{name: injector, model: {{backend: openai, model: injector, base_url: '{url}'}}}}"
    run, config = make_evaluated_run(
        f"evaluate.candidates=[{extra}]",
        "judge.model.model=gullible-judge",
        "checks.max_judge_flip_rate=0.2",
        name="untrusted",
    )
    scores = run_evaluate(run, config, build_task(config.task), prepare_split(run, config).test)
    assert scores["judge"]["trusted"] is False
    (reason,) = scores["judge"]["reasons"]
    assert reason.startswith("25.0% of its 24 pairwise verdicts changed")
    for name, candidate in scores["candidates"].items():
        assert not {"judge_score", "judge_win_rate"} & set(candidate["metrics"]), name
        assert "judge_score" in candidate["judge"]["metrics"]  # for the judge section
    assert all(
        not {"judge_score", "judge_win_rate"} & set(c["metrics"]) for c in scores["comparisons"]
    )

    def judge_clashes(found: dict[str, Any]) -> list[str]:
        return [
            w["subject"]
            for w in found["warnings"]
            if w["check"] in ("metric_disagreement", "too_few_examples")
            and "judge_" in w["message"]
        ]

    assert "judge_untrusted" in [w["check"] for w in scores["warnings"]]
    assert judge_clashes(scores) == []
    run_report(run, config)
    md = (run.root / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| candidate | role"))
    assert "accuracy [95% CI]" in header and "judge" not in header
    assert "**Not to be trusted: this judge failed its own checks:** 25.0% of its 24" in md
    assert "judge_score is the LLM judge's rubric score" not in md
    assert "(plots/metric_judge_score.png)" not in md
    # Its pointwise scores are still shown, in the judge section only.
    assert "| injector | 5 [5, 5] (degenerate) | 6 of 6 |" in md
    assert "**judge not trusted**: the judge failed its own checks" in md
    html = (run.root / "report.html").read_text()
    assert 'id="judge-untrusted"' in html and "25.0% of its 24 pairwise verdicts" in html
    # Trusted under the default limit (50%), the same judge's scores do drive those warnings.
    lenient = parse_config(
        config.model_dump(mode="json"), "test", ["checks.max_judge_flip_rate=0.5"]
    )
    trusted = run_evaluate(run, lenient, build_task(config.task), prepare_split(run, config).test)
    assert trusted["judge"]["trusted"] is True and judge_clashes(trusted)
