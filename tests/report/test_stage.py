import html
import json
from pathlib import Path
from typing import Any

from potstill.config import parse_config
from potstill.report.stage import run_report
from potstill.runs import RunFolder, write_json, write_jsonl

CONFIG = parse_config(
    {
        "name": "r",
        "task": {"kind": "classification", "labels": ["yes", "no"]},
        "dataset": {"path": "x.jsonl"},
    },
    "r.yaml",
)


def _candidate(role: str, accuracy: float) -> dict[str, Any]:
    interval = {"ci_low": accuracy - 0.1, "ci_high": accuracy + 0.1, "n": 10}
    return {
        "role": role,
        "model": "m",
        "prompt_style": "zero_shot",
        "shots": 0,
        "n": 10,
        "accuracy": accuracy,
        "ci_low": accuracy - 0.1,
        "ci_high": accuracy + 0.1,
        "flexible_accuracy": accuracy,
        "flexible_ci_low": accuracy - 0.1,
        "flexible_ci_high": accuracy + 0.1,
        "no_answer_rate": 0.0,
        "malformed_rate": 0.0,
        "call_failed_rate": 0.0,
        "mean_completion_tokens": 2.0,
        "mean_prompt_tokens": 30.0,
        "mean_latency_s": 0.1,
        "p95_latency_s": 0.2,
        "metrics": {
            "accuracy": {"value": accuracy, **interval, "higher_is_better": True},
            "macro_f1": {"value": 0.5, **interval, "higher_is_better": True},
        },
        "confusion": {
            "labels": ["yes", "no"],
            "columns": ["yes", "no", "no answer"],
            "matrix": [[4, 1, 0], [2, 3, 0]],
        },
    }


def _evaluated_reviews(url: str, app: Any, tiny_model: Path, root: Path) -> tuple[Any, Any]:
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
    app.state.answers["reviewer"] = answers
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
HOSTILE_REPLY = "yes <img src=x onerror=alert(2)>\n<script>window.pwned = 1</script> & \\| done"


def test_dataset_and_model_text_is_inert_in_report_md_as_in_report_html(tmp_path: Path) -> None:
    from markdown_it import MarkdownIt

    run = RunFolder(tmp_path / "r")
    example = {"id": HOSTILE_ID, "inputs": {"text": HOSTILE_INPUT}, "reference": "<b>yes</b>"}
    write_jsonl(run.data_dir / "test.jsonl", [example])
    for name, score in (("teacher", 1.0), ("distilled", 0.0)):  # they disagree: it is shown
        row = {"id": HOSTILE_ID, "reply": HOSTILE_REPLY, "error": None, "status": "ok"}
        row["reference"] = example["reference"]
        write_jsonl(run.eval_dir / "predictions" / f"{name}.jsonl", [{**row, "score": score}])
    scores = {
        "candidates": {
            "teacher": _candidate("teacher", 0.7),
            "distilled": _candidate("student", 0.8),
        },
        "comparisons": [],
        "order": ["teacher", "distilled"],
    }
    write_json(run.eval_dir / "scores.json", scores)
    report = run_report(run, CONFIG).read_text()
    # CommonMark with raw HTML allowed (as many viewers render it), GitHub's tables on.
    page = MarkdownIt("commonmark").enable("table").render(report)
    start = page.index("<h2>Where the candidates disagree</h2>")
    rendered = page[start : page.index("<h2>", start + 1)]
    for markup in ("<svg", "<img", "<script", "<a href", "<code>x", "<b>yes"):
        assert markup not in rendered, f"{markup} in report.md renders as markup"
    # Each piece shows as the text it is, in its heading, quote and table cells.
    text = html.unescape(rendered)
    assert f"<h3>{html.escape(HOSTILE_ID, quote=False)}</h3>" in rendered
    assert HOSTILE_INPUT in text and "Reference: <strong><b>yes</b></strong>" in text
    assert "<script>window.pwned = 1</script> & \\| done" in text
    # Two replies of five cells each: no pipe broke out of its cell.
    replies = rendered.split("<tbody>")[1].split("<tr>")[1:]
    assert len(replies) == 2 and all(r.count("<td>") == 5 for r in replies)


def test_each_transfer_set_has_a_section_with_the_test_splits_tables(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "r")
    comparison = {
        "a": "distilled",
        "b": "teacher",
        "metric": "accuracy",
        "n": 10,
        "difference": -0.3,
        "ci_low": -0.5,
        "ci_high": -0.1,
        "a_only_correct": 0,
        "b_only_correct": 3,
        "mcnemar_p": 0.25,
        "flexible": {"difference": -0.3, "ci_low": -0.5, "ci_high": -0.1},
        "metrics": {"accuracy": {"difference": -0.3, "ci_low": -0.5, "ci_high": -0.1, "n": 10}},
    }
    on_test = {"teacher": _candidate("teacher", 0.7), "distilled": _candidate("student", 0.8)}
    on_set = {"teacher": _candidate("teacher", 0.6), "distilled": _candidate("student", 0.3)}
    overlap = {
        "ngram": 8,
        "test_examples": 10,
        "exact_duplicates": 1,
        "mean_overlap": 0.1,
        "half_overlapping_rate": 0.1,
    }
    scores = {
        "candidates": on_test,
        "comparisons": [],
        "order": ["teacher", "distilled"],
        "headline": "accuracy",
        # scores.json sorts its keys; the report keeps the config's order of the sets
        "transfer": {
            name: {
                "source": f"/data/{name}.jsonl",
                "n": 10,
                "candidates": on_set,
                "comparisons": [comparison],
            }
            for name in ("zeta", "alpha")
        },
        "checks": {"transfer_overlap": {"zeta": overlap}},
    }
    config = parse_config(
        {
            **CONFIG.model_dump(mode="json"),
            "evaluate": {
                "transfer": [
                    {"name": "zeta", "path": "z.jsonl"},
                    {"name": "alpha", "path": "a.jsonl"},
                ]
            },
        },
        "r.yaml",
    )
    write_json(run.eval_dir / "scores.json", scores)
    report = run_report(run, config).read_text()
    zeta, alpha = report.index("## Transfer set: zeta"), report.index("## Transfer set: alpha")
    assert report.index("## Paired comparisons (same test examples)") < zeta < alpha
    section = report[zeta:alpha]
    assert "10 examples from /data/zeta.jsonl, a set of its own" in section
    assert "The LLM judge scores the test split only" in section
    assert "Train/transfer overlap: 1 of 10 inputs repeat a training input" in section
    # The same table and comparison rows as the test split's, with the set's own numbers.
    assert "| candidate | role | how asked | accuracy [95% CI] | macro_f1 [95% CI] |" in section
    assert "| distilled | student | zero_shot, 0-shot | 0.3 [0.2, 0.4] |" in section
    assert "| distilled | teacher | -30.0 pts | [-50.0, -10.0] | 0 | 3 | 0.25 |" in section
    assert "Train/transfer overlap" not in report[alpha:]  # no figures, no line
    # The test split's own table is untouched by the sets.
    assert "| distilled | student | zero_shot, 0-shot | 0.8 [0.7, 0.9] |" in report[:zeta]
    html = (run.root / "report.html").read_text()
    assert html.count('<section class="transfer"') == 2 and 'id="transfer-zeta"' in html
    assert "<h2>Transfer set: zeta</h2>" in html and "<td>0.3 [0.2, 0.4]</td>" in html
