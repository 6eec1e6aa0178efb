import html
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from potstill.config import parse_config
from potstill.pipeline import prepare_split
from potstill.report.stage import run_report


def _evaluated_reviews(url: str, replies: Any, tiny_model: Path, root: Path) -> tuple[Any, Any]:
    """A small yes/no classification run that a real evaluate stage scored: the teacher is
    the scripted endpoint (right on 7 of 10 test reviews), the student the tiny model."""
    import shutil

    from potstill.evaluate.stage import run_evaluate
    from potstill.pipeline import open_run, prepare_split
    from potstill.tasks import build_task

    data = root / "reviews.jsonl"
    rows = [
        {
            "text": f"Review {i}: it was {'fine' if i % 2 else 'bad'}.",
            "label": "yes" if i % 2 else "no",
        }
        for i in range(20)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree = {
        "name": "reviews",
        "task": {"kind": "classification", "labels": ["yes", "no"]},
        "dataset": {
            "path": str(data),
            "test_size": 10,
            "fields": {"text": "text", "answer": "label"},
        },
        "teacher": {
            "model": {"backend": "openai", "model": "reviewer", "base_url": url},
            "prompt": {"style": "zero_shot", "max_tokens": 4},
        },
        "students": [{"name": "distilled", "base": {"model": str(tiny_model)}}],
        "synth": {"prompt": {"style": "zero_shot", "max_tokens": 2}},
        "evaluate": {"bootstrap_samples": 100, "report_examples": 2},
        "judge": {"enabled": False},
    }
    config = parse_config(tree, "reviews.yaml")
    run = open_run(config, root / "runs")
    test = prepare_split(run, config).test
    task = build_task(config.task)
    answers = {}
    for i, example in enumerate(test):
        asked = task.messages(example.inputs, config.teacher.prompt)[-1]["content"]
        wrong = "no" if example.reference == "yes" else "yes"
        answers["any", asked] = wrong if i in (1, 4, 7) else str(example.reference)
    replies.answers["reviewer"] = answers
    shutil.copytree(tiny_model, run.student_dir("distilled") / "final")
    run_evaluate(run, config, task, test)
    return run, config


def test_report_renders_every_metric_with_its_interval_and_the_confusion(
    scripted_endpoint: tuple[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    from potstill.report.stage import metric_text

    run, config = _evaluated_reviews(*scripted_endpoint, tiny_model_dir, tmp_path)
    scores = json.loads((run.eval_dir / "scores.json").read_text())  # as evaluate wrote it
    report = run_report(run, config).read_text()
    # Every metric of the mapping is a column of the comparison table, with its interval.
    assert "| accuracy [95% CI] | flexible_accuracy [95% CI] | macro_f1 [95% CI] |" in report
    teacher = scores["candidates"]["teacher"]
    assert teacher["metrics"]["accuracy"]["value"] == 0.7
    for name in ("teacher", "base_student", "distilled"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        for entry in scores["candidates"][name]["metrics"].values():
            assert f"| {metric_text(entry)} |" in row
    table = report[report.index("Confusion matrix, teacher") :].split("\n\n")[1]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert table.splitlines()[0] == "| reference \\ predicted | yes | no | no answer |"
    assert [[int(x.strip(" |")) for x in r[1:]] for r in rows] == teacher["confusion"]["matrix"]
    assert sum(map(sum, teacher["confusion"]["matrix"])) == 10
    (comparison,) = [
        c for c in scores["comparisons"] if (c["a"], c["b"]) == ("distilled", "teacher")
    ]
    assert f"| distilled | teacher | {100 * comparison['difference']:+.1f} pts |" in report
    html = (run.root / "report.html").read_text()
    assert "macro_f1 [95% CI]" in html and "<th>no answer</th>" in html


# Dataset and model text that would be markup if written raw: HTML that runs script, an image
# that fetches, a link, a code span and a pipe that would end its table cell.
HOSTILE_ID = "<svg onload=alert(1)>"
HOSTILE_INPUT = "Fine ![pixel](http://tracker.invalid/p.png) [docs](http://evil.invalid) | `x`"
HOSTILE_LABEL = "<b>yes</b>"
HOSTILE_REASON = "<img src=x onerror=alert(2)> <script>window.pwned = 1</script> & \\| done"


def test_dataset_and_model_text_is_inert_in_report_md_as_in_report_html(
    scripted_endpoint: tuple[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A run a real evaluate stage scored: the hostile example is in the test split with the
    label `<b>yes</b>`, the teacher answers it right with a hostile rationale, and the tiny
    students do not, so the example is shown where the candidates disagree."""
    from markdown_it import MarkdownIt

    from potstill.evaluate.stage import run_evaluate
    from potstill.pipeline import open_run, prepare_split
    from potstill.tasks import build_task

    url, replies = scripted_endpoint
    train = tmp_path / "train.jsonl"
    rows = [{"id": f"t{i}", "text": f"Plain review {i}.", "answer": "no"} for i in range(4)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"id": HOSTILE_ID, "text": HOSTILE_INPUT, "answer": HOSTILE_LABEL}))
    tree = {
        "name": "hostile",
        "task": {"kind": "classification", "labels": [HOSTILE_LABEL, "no"]},
        "dataset": {"path": str(train), "test": {"path": str(test)}},
        "teacher": {
            "model": {"backend": "openai", "model": "hostile", "base_url": url},
            "prompt": {"style": "cot", "max_tokens": 4},
        },
        "students": [{"name": "distilled", "base": {"model": str(tiny_model_dir)}}],
        "synth": {"prompt": {"style": "zero_shot", "max_tokens": 2}},
        "evaluate": {"bootstrap_samples": 100, "teacher_zero_shot": False},
        "judge": {"enabled": False},
    }
    config = parse_config(tree, "hostile.yaml")
    run = open_run(config, tmp_path / "runs")
    (example,) = prepare_split(run, config).test
    task = build_task(config.task)
    asked = task.messages(example.inputs, config.teacher.prompt)[-1]["content"]
    reply = json.dumps({"reason": HOSTILE_REASON, "answer": HOSTILE_LABEL})
    replies.answers["hostile"] = {("any", asked): reply}
    shutil.copytree(tiny_model_dir, run.student_dir("distilled") / "final")
    scores = run_evaluate(run, config, task, [example])
    assert scores["candidates"]["teacher"]["metrics"]["accuracy"]["value"] == 1.0
    assert scores["candidates"]["distilled"]["metrics"]["accuracy"]["value"] == 0.0
    report = run_report(run, config).read_text()
    # CommonMark with raw HTML allowed (as many viewers render it), GitHub's tables on.
    page = MarkdownIt("commonmark").enable("table").render(report)
    start = page.index("<h2>Where the candidates disagree</h2>")
    rendered = page[start : page.index("<h2>", start + 1)]
    for markup in ("<svg", "<img", "<script", "<a href", "<code>x", "<b>yes"):
        assert markup not in rendered, f"{markup} in report.md renders as markup"
    # Each piece shows as the text it is, in its heading, quote and table cells.
    text = html.unescape(rendered)
    assert f"<h3>{html.escape(HOSTILE_ID, quote=False)}</h3>" in rendered
    assert HOSTILE_INPUT in text and f"Reference: <strong>{HOSTILE_LABEL}</strong>" in text
    assert reply in text
    # One reply per candidate, five cells each: no pipe broke out of its cell.
    replies = rendered.split("<tbody>")[1].split("<tr>")[1:]
    assert len(replies) == len(scores["order"]) == 3
    assert all(r.count("<td>") == 5 for r in replies)


def test_each_transfer_set_has_a_section_with_the_test_splits_tables(
    make_evaluated_run: Callable[..., Any], scripted_endpoint: tuple[str, Any], tmp_path: Path
) -> None:
    """Two transfer sets that a real evaluate stage scored (the scripted teacher right on all
    but one of each); zeta repeats a training input."""
    from potstill.evaluate.stage import run_evaluate
    from potstill.pipeline import prepare_transfer
    from potstill.report.stage import metric_text
    from potstill.tasks import build_task

    _, replies = scripted_endpoint
    run, config = make_evaluated_run("judge.enabled=false", name="transferred")
    split = prepare_split(run, config)
    seen = split.train[0]
    sources = {}
    for name, numbers in (("zeta", (7, 9, 4)), ("alpha", (3, 8, 6, 2))):
        rows = [{"question": f"Compute {a} plus 5, please.", "answer": str(a + 5)} for a in numbers]
        if name == "zeta":
            rows.append({"question": seen.inputs["question"], "answer": seen.reference})
        sources[name] = tmp_path / f"{name}.jsonl"
        sources[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    listed = ", ".join(f"{{name: {n}, path: '{p}'}}" for n, p in sources.items())
    config = parse_config(
        config.model_dump(mode="json"), "transferred.yaml", [f"evaluate.transfer=[{listed}]"]
    )
    task = build_task(config.task)
    transfer = prepare_transfer(run, config)
    for examples in transfer.values():
        for i, example in enumerate(examples):
            asked = task.messages(example.inputs, config.teacher.prompt)[-1]["content"]
            wrong = (1, 2) if example in transfer["zeta"] else (1,)
            answer = "0" if i in wrong else example.reference
            replies.answers["teacher"]["cot", asked] = json.dumps({"reason": "r", "answer": answer})
    scores = run_evaluate(run, config, task, split.test, transfer)
    report = run_report(run, config).read_text()
    zeta, alpha = report.index("## Transfer set: zeta"), report.index("## Transfer set: alpha")
    assert report.index("## Paired comparisons (same test examples)") < zeta < alpha
    section = report[zeta:alpha]
    assert f"4 examples from {sources['zeta']}, a set of its own" in section
    assert "The LLM judge scores the test split only" in section
    assert "Train/transfer overlap: 1 of 4 inputs repeat a training input" in section
    # The same table and comparison rows as the test split's, with the set's own numbers.
    header = next(line for line in report.splitlines() if line.startswith("| candidate | role"))
    assert header in section and "accuracy [95% CI]" in header
    on_set = scores["transfer"]["zeta"]
    teacher = on_set["candidates"]["teacher"]["metrics"]["accuracy"]
    assert (teacher["value"], teacher["n"]) == (0.5, 4)
    for name, candidate in on_set["candidates"].items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {metric_text(candidate['metrics']['accuracy'])} |" in row
    (comparison,) = [
        c for c in on_set["comparisons"] if (c["a"], c["b"]) == ("distilled", "teacher")
    ]
    assert f"| distilled | teacher | {100 * comparison['difference']:+.1f} pts |" in section
    (on_test,) = [c for c in scores["comparisons"] if (c["a"], c["b"]) == ("distilled", "teacher")]
    assert comparison["difference"] != on_test["difference"]  # the set's own, not the test's
