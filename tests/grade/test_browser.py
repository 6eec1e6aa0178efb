"""Two graders grade a small round in real headless Chromium; the admin page and the report
show their agreement; cross-site and tampered posts are refused in the browser too.

Screenshots of the pages go to $POTSTILL_SCREENSHOT_DIR when set (docs/ uses them), else to
the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from potstill.grade.app import create_app
from potstill.grade.pages import login_link
from potstill.grade.rounds import GradingRound, grades_path, open_round
from potstill.grade.summary import human_summary
from potstill.records import JudgeCall, JudgePair, JudgeRecord, write_records
from potstill.report.stage import run_report
from potstill.runs import RunFolder

from .conftest import LABELS, RIGHT
from .test_app import HOSTILE

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def label_in(text: str) -> str | None:
    found = [label for label in LABELS if label in text]
    return found[0] if len(found) == 1 else None


def decide(page: Any, grader: str) -> tuple[str, list[str]]:
    """What a grader reads on the page and the keys they press; two slightly different
    graders, so their agreement is high but not perfect."""
    mode = page.get_attribute("#grade-form", "data-mode")
    reference = page.inner_text("#reference")
    if mode == "pointwise":
        answer = page.inner_text("#answer")
        right = label_in(answer) == reference
        correctness = 5 if right else 1
        fmt = 5 if answer.strip() in LABELS else 3 if answer.startswith("{") else 2
        if grader == "bob":
            correctness = 4 if right and len(answer) > 20 else 2 if not right else 5
            fmt = 2 if answer.startswith("{") else fmt
        return mode, [str(correctness), str(fmt)]
    a, b = page.inner_text("#answer-a"), page.inner_text("#answer-b")
    right_a, right_b = label_in(a) == reference, label_in(b) == reference
    choice = "a" if right_a and not right_b else "b" if right_b and not right_a else "t"
    if grader == "bob" and right_a and right_b:
        choice = "a" if len(a) < len(b) else "b"
    return mode, [choice]


def grade_pages(
    page: Any, grader: str, count: int, seen: list[str], clicks: int = 0, comment: str = ""
) -> None:
    """Grade `count` pages as a person would: keys mostly, the mouse for the first few; a
    comment is typed last and sent with Ctrl+Enter from the comment box."""
    for i in range(count):
        seen.append(page.get_attribute('input[name="task"]', "value"))
        mode, keys = decide(page, grader)
        if i < clicks:  # the mouse: radio buttons, then the button
            if mode == "pointwise":
                for name, value in zip(("correctness", "format"), keys):
                    page.check(f'input[name="score_{name}"][value="{value}"]')
            else:
                page.check(
                    f'input[name="choice"][value="{ {"a": "A", "b": "B"}.get(keys[0], "tie") }"]'
                )
            with page.expect_navigation():
                page.click("#next")
        else:
            for key in keys:
                page.keyboard.press(key)
            if comment:
                page.fill('textarea[name="comment"]', comment)
            with page.expect_navigation():
                page.keyboard.press("Control+Enter" if comment else "n")


def progress(page: Any) -> tuple[int, int]:
    done, total = page.inner_text("#progress-text").split(" / ")
    return int(done), int(total)


def write_judge(run: RunFolder, grading: GradingRound) -> None:
    """Judge records in the evaluate stage's format (eval/judge/<candidate>.jsonl): right
    answers win, with a few verdicts the humans will not share."""
    sample = grading.store.sample()
    records: dict[str, list[JudgeRecord]] = {name: [] for name in RIGHT}
    for n, example_id in enumerate(sample):
        i = int(example_id[1:])
        for name, right in RIGHT.items():
            score = 8 if i in right else 3
            record = JudgeRecord(
                id=example_id,
                pointwise=JudgeCall(reply=f"Score: {score}", status="ok", score=score),
            )
            if name != "teacher":
                mine, theirs = i in right, i in RIGHT["teacher"]
                verdict = "tie" if mine == theirs else "win" if mine else "loss"
                if n % 3 == 0:  # the judge prefers the longer reply here
                    verdict = "loss" if name == "distilled" else "win"
                asked = JudgeCall(reply=f"Verdict: {verdict}")
                record.pairwise = JudgePair(
                    vs="teacher",
                    candidate_first=asked,
                    candidate_second=asked,
                    outcome=verdict,
                    flipped=False,
                )
            records[name].append(record)
    for name, rows in records.items():
        write_records(run.eval_dir / "judge" / f"{name}.jsonl", rows)


def count_grades(run: RunFolder) -> int:
    with sqlite3.connect(grades_path(run)) as db:
        return int(db.execute("SELECT COUNT(*) FROM grades").fetchone()[0])


def attacker_app(target: str, task_id: str) -> Any:
    """Another site: its page posts a grade to the grading app as soon as it loads."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    app = FastAPI()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (
            f'<form id="f" method="post" action="{target}/grade">'
            f'<input name="task" value="{task_id}"><input name="nonce" value="guess">'
            '<input name="csrf" value="guess"><input name="score_correctness" value="5">'
            '<input name="score_format" value="5"></form>'
            "<script>document.getElementById('f').submit()</script>"
        )

    return app


def test_two_graders_grade_blind_and_the_admin_page_and_report_show_agreement(
    browser: Any,
    make_run: Callable[..., RunFolder],
    start_server: Callable[[Any], str],
    tmp_path: Path,
) -> None:
    shots = Path(os.environ.get("POTSTILL_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    run = make_run({"size": 8, "overlap": 6, "items_per_grader": 7})
    grading = open_round(run, run.load_config())
    ann_token, _ = grading.add_grader("ann")
    bob_token, _ = grading.add_grader("bob")
    admin_token = grading.store.new_admin_token()
    base = start_server(create_app(grading, samples=300)).removesuffix("/v1")
    view = {"viewport": {"width": 1280, "height": 860}}

    # ann grades 8 pages (mouse first, then keys), leaves, and comes back later.
    ann_seen: list[str] = []
    ann = browser.new_context(**view)
    page = ann.new_page()
    page.goto(login_link(base, ann_token))
    assert progress(page) == (0, 35)
    assert not re.search(r"teacher|base_student|distilled", page.content())  # blind
    grade_pages(page, "ann", 8, ann_seen, clicks=3)
    grade_pages(page, "ann", 1, ann_seen, comment=HOSTILE)
    assert progress(page) == (9, 35)
    ann.close()

    ann = browser.new_context(**view)
    page = ann.new_page()
    page.goto(login_link(base, ann_token))
    assert progress(page) == (9, 35)  # resumed where ann stopped
    grade_pages(page, "ann", 26, ann_seen)
    assert page.inner_text("#all-done").startswith("All done")
    assert len(ann_seen) == len(set(ann_seen)) == 35  # nothing shown twice
    ann.close()

    # bob: a tampered form (an item only ann has) and another site's auto-post are refused.
    bob = browser.new_context(**view)
    page = bob.new_page()
    page.goto(login_link(base, bob_token))
    store = grading.store
    ann_id, bob_id = (store.grader_for(t).grader_id for t in (ann_token, bob_token))  # type: ignore[union-attr]
    only_ann = next(
        t.task_id for t in store.assigned_tasks(ann_id) if not store.is_assigned(bob_id, t.task_id)
    )
    before = count_grades(run)
    page.evaluate("(id) => { document.querySelector('input[name=task]').value = id; }", only_ann)
    _, keys = decide(page, "bob")
    for key in keys:
        page.keyboard.press(key)
    with page.expect_navigation():
        page.keyboard.press("n")
    assert "not assigned to you" in page.inner_text("#error-message")
    evil = start_server(attacker_app(base, only_ann)).removesuffix("/v1")
    page.goto(evil)
    page.wait_for_url(f"{base}/grade")
    assert "Cross-site form post refused" in page.inner_text("#error-message")
    assert count_grades(run) == before

    bob_seen: list[str] = []
    page.goto(f"{base}/grade")
    grade_pages(page, "bob", 3, bob_seen)
    page.keyboard.press("4")  # a half-filled page: the first criterion scored
    page.screenshot(path=str(shots / "grading-pointwise.png"))
    page.goto(f"{base}/grade")
    grade_pages(page, "bob", 21, bob_seen)
    assert page.get_attribute("#grade-form", "data-mode") == "pairwise"
    page.keyboard.press("a")
    page.screenshot(path=str(shots / "grading-pairwise.png"))
    page.goto(f"{base}/grade")
    grade_pages(page, "bob", 11, bob_seen)
    assert page.inner_text("#all-done").startswith("All done")
    bob.close()
    assert count_grades(run) == 70

    # The admin page: progress, kappa, the judge's agreement, the comment shown as text.
    write_judge(run, grading)
    admin = browser.new_context(**{"viewport": {"width": 1280, "height": 1000}})
    page = admin.new_page()
    page.goto(login_link(base, admin_token))
    summary = human_summary(run, samples=300)
    assert summary is not None
    point = summary["agreement"]["pointwise"]
    assert point["method"] == "Cohen's kappa" and point["n_answers"] == 6 * 3
    row = page.locator('.human-agreement tr[data-mode="pointwise"]')
    assert "Cohen's kappa" in row.inner_text()
    assert row.locator(".agreement-value").inner_text().startswith(f"{point['value']:.2f} [")
    assert "matches the graders' majority" in page.inner_text("#human-grading")
    assert HOSTILE in page.inner_text("#comments")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#comments img").count() == 0
    page.screenshot(path=str(shots / "grading-admin.png"), full_page=True)
    admin.close()
    for name in ("pointwise", "pairwise", "admin"):
        assert (shots / f"grading-{name}.png").stat().st_size > 20_000

    # The report picks the grades up.
    run_report(run, run.load_config())
    report = (run.root / "report.md").read_text()
    assert "## Human grading" in report
    assert f"Cohen's kappa (quadratic-weighted: {point['weighted_kappa']:.2f})" in report
    assert f"| {point['value']:.2f} [" in report
    assert 'id="human-grading"' in (run.root / "report.html").read_text()
    print(
        "\n"
        + json.dumps(
            {k: summary[k] for k in ("pointwise", "pairwise", "agreement", "judge")}, indent=1
        )
    )
