"""The report stage: report.md and a self-contained report.html (plots inlined), from eval/."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from jinja2 import Environment

from potstill.config import RunConfig
from potstill.evaluate.stats import degenerate
from potstill.figures import number, percent, template_environment
from potstill.files import atomic_write_bytes, atomic_write_text, read_jsonl
from potstill.grade.summary import human_summary, render_section
from potstill.records import (
    JudgeRecord,
    Prediction,
    Scores,
    SynthSummary,
    TrainLogEntry,
    TrainSummary,
    read_record,
    read_records,
)
from potstill.report.examples import disagreements
from potstill.report.plots import cost_plot, loss_plot, metric_plot
from potstill.report.verdict import INTERVAL_NOTE, same_candidates, verdicts
from potstill.runs import RunFolder
from potstill.tasks import build_task
from potstill.tasks.base import task_user_text

CHECK_TITLES = {
    "parse_failure": "parse failures",
    "format": "format",
    "train_test_overlap": "train/test overlap",
    "references": "missing references",
    "metric_disagreement": "metrics disagree",
    "too_few_examples": "too few examples",
    "judge_sample": "judge sample",
    "judge_self_preference": "judge self-preference",
    "judge_parse_failure": "judge replies",
    "judge_position_flip": "judge position bias",
    "judge_position_bias": "judge position bias",
    "judge_length_bias": "judge length bias",
    "judge_untrusted": "judge not trusted",
    "teacher_yield": "teacher yield",
    "teacher_constant_answer": "one answer",
    "student_rows": "too few rows",
    "student_steps": "too few steps",
    "student_loss": "training loss",
    "student_warmup": "warm-up",
}


def _num(value: float | None, digits: int = 3) -> str:
    return number(value, f".{digits}g")


def metric_text(entry: dict[str, Any] | None) -> str:
    """`value [low, high]` for one entry of a candidate's `metrics` mapping, flagged when the
    interval is a single point (a bootstrap over scores that never vary says nothing)."""
    if not entry or entry.get("value") is None:
        return "—"
    fmt = percent if entry.get("percent") else _num
    text = f"{fmt(entry['value'])} [{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]"
    return text + (" (degenerate)" if degenerate(entry["ci_low"], entry["ci_high"]) else "")


# Dataset and model text in report.md, as inert as in report.html: HTML as entities (every
# Markdown renderer shows `&lt;svg onload=...&gt;` as text), and the brackets of links and
# images, code-span backticks, cell pipes and backslashes escaped.
_MARKDOWN_TEXT = str.maketrans(
    {
        **{"&": "&amp;", "<": "&lt;", ">": "&gt;"},
        **{c: "\\" + c for c in "\\`[]|"},
        "\r": "",
    }
)


def markdown_cell(text: object) -> str:
    """Text from the dataset or a model as inert Markdown on one line (a table cell, a
    heading, a quote): markup escaped (`_MARKDOWN_TEXT`), line breaks as <br>."""
    return str(text).translate(_MARKDOWN_TEXT).replace("\n", "<br>")


def _cost(synth: SynthSummary) -> str:
    """The teacher's bill for the synthetic data, from synth/summary.json."""
    cost = synth.cost
    tokens = f"{cost['calls']} calls, {cost['prompt_tokens']} + {cost['completion_tokens']} tokens"
    if cost.get("mode") == "batch":  # the teacher answered through its Batch API
        tokens += ", at batch prices"
    return f"${cost['usd']:.4f} ({tokens})" if cost["priced"] else f"no price set ({tokens})"


def _ordered(scores: dict[str, Any], order: list[str] | None = None) -> dict[str, Any]:
    """Candidates in evaluation order: teachers, base student, trained students, extras
    (`order`: the test split's, for a transfer set's candidates)."""
    order = order or scores.get("order") or list(scores["candidates"])
    return {name: scores["candidates"][name] for name in order if name in scores["candidates"]}


def _metric_names(candidates: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(m for c in candidates.values() for m in c.get("metrics", {})))


def _score_rows(candidates: dict[str, Any], metric_names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, c in candidates.items():
        metrics = c.get("metrics", {})
        rows.append(
            {
                "name": name,
                "role": c["role"],
                "model": c["model"],
                "how": f"{c['prompt_style']}, {c['shots']}-shot"
                + (f"; {c['procedure']}" if c.get("procedure") else ""),
                "metrics": [metric_text(metrics.get(m)) for m in metric_names],
                "ns": [str(metrics[m]["n"]) if m in metrics else "—" for m in metric_names],
                "n": c["n"],
                "no_answer": percent(c["no_answer_rate"] + c["malformed_rate"]),
                "call_failed": percent(c["call_failed_rate"]),
            }
        )
    return rows


def _judge_rows(candidates: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, c in candidates.items():
        judge = c.get("judge")
        if judge is None:
            continue
        point, pair = judge["pointwise"], judge.get("pairwise")
        # An untrusted judge's scores are kept under the candidate's judge entry only.
        metrics = {**c.get("metrics", {}), **judge.get("metrics", {})}
        rows.append(
            {
                "name": name,
                "score": metric_text(metrics.get("judge_score")),
                "scored": f"{point['scored']} of {point['judged']}",
                "malformed": percent(point["malformed_rate"]),
                "distribution": " / ".join(str(point["distribution"][str(s)]) for s in range(1, 6)),
                "wtl": f"{pair['win']} / {pair['tie']} / {pair['loss']}" if pair else "—",
                "win_rate": metric_text(metrics.get("judge_win_rate")),
                "flip_rate": percent(pair["flip_rate"]) if pair else "—",
                "pair_malformed": percent(pair["malformed_rate"]) if pair else "—",
            }
        )
    return rows


def judge_trust_context(scores: dict[str, Any]) -> dict[str, Any]:
    """Whether the judge's scores are evidence, as the evaluate stage decided it
    (`judge.trusted`, `judge.reasons` in scores.json; a judge without the decision counts)."""
    judge = scores.get("judge") or {}
    return {"judge_trusted": judge.get("trusted", True), "judge_reasons": judge.get("reasons", [])}


def _cost_rows(candidates: dict[str, Any]) -> list[dict[str, Any]]:
    def money(value: float | None) -> str:
        return "n/a" if value is None else f"${value:.4g}"

    return [
        {
            "name": name,
            "cost": money(c.get("cost_per_1k_requests")),
            "basis": c.get("cost_basis", ""),
            "seconds": _num(c.get("seconds_per_1k_requests")),
            "latency": f"{c['mean_latency_s']:.3f}",
            "p95": f"{c['p95_latency_s']:.3f}",
            "tokens_per_s": _num(c.get("tokens_per_s")),
            "tokens": f"{c['mean_prompt_tokens']:.0f} / {c['mean_completion_tokens']:.1f}",
        }
        for name, c in candidates.items()
    ]


def _comparison_rows(scores: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    strict = [
        {
            **c,
            "diff": f"{100 * c['difference']:+.1f} pts",
            "ci": f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]",
            # McNemar needs right/wrong scores; an open-text headline (ROUGE) has none.
            "p": "n/a" if c.get("mcnemar_p") is None else f"{c['mcnemar_p']:.3g}",
            "a_only_correct": "n/a" if c.get("a_only_correct") is None else c["a_only_correct"],
            "b_only_correct": "n/a" if c.get("b_only_correct") is None else c["b_only_correct"],
            "flexible_diff": f"{100 * c['flexible']['difference']:+.1f} pts "
            f"[{100 * c['flexible']['ci_low']:+.1f}, {100 * c['flexible']['ci_high']:+.1f}]",
        }
        for c in scores["comparisons"]
    ]
    per_metric = [
        {
            "a": c["a"],
            "b": c["b"],
            "metric": metric,
            "diff": f"{e['difference']:+.3g}",
            "ci": f"[{e['ci_low']:+.3g}, {e['ci_high']:+.3g}]",
            "n": e["n"],
            "test": f"McNemar p = {e['mcnemar_p']:.3g}" if "mcnemar_p" in e else "paired bootstrap",
        }
        for c in scores["comparisons"]
        for metric, e in c.get("metrics", {}).items()
    ]
    return strict, per_metric


def _examples(run: RunFolder, config: RunConfig, order: list[str]) -> list[dict[str, Any]]:
    test_path = run.data_dir / "test.jsonl"
    if config.evaluate.report_examples == 0 or not test_path.exists():
        return []
    task = build_task(config.task)
    inputs = {
        r["id"]: task_user_text(task, r["inputs"], "zero_shot") for r in read_jsonl(test_path)
    }
    predictions = {
        n: [
            r.as_written()
            for r in read_records(run.eval_dir / "predictions" / f"{n}.jsonl", Prediction)
        ]
        for n in order
    }
    judged: dict[str, dict[str, dict[str, Any]]] = {}
    for name in order:
        path = run.eval_dir / "judge" / f"{name}.jsonl"
        if path.exists():
            judged[name] = {r.id: r.as_written() for r in read_records(path, JudgeRecord)}
    return disagreements(
        order, predictions, inputs, judged, config.evaluate.report_examples, config.evaluate.seed
    )


def _plots(run: RunFolder, config: RunConfig, candidates: dict[str, Any]) -> list[dict[str, Any]]:
    """Every plot as {file, title, png}: each metric, accuracy against cost, training loss."""
    plots = []
    for metric in _metric_names(candidates):
        entries = {n: c["metrics"][metric] for n, c in candidates.items() if metric in c["metrics"]}
        plots.append(
            {
                "file": f"plots/metric_{metric}.png",
                "title": f"{metric} per candidate, with 95% intervals",
                "png": metric_plot(metric, entries),
            }
        )
    points = [
        {"name": n, "cost": c["cost_per_1k_requests"], **c["metrics"]["accuracy"]}
        for n, c in candidates.items()
        if c.get("cost_per_1k_requests") is not None
        and c.get("metrics", {}).get("accuracy", {}).get("value") is not None
    ]
    if points:
        plots.append(
            {
                "file": "plots/accuracy_vs_cost.png",
                "title": "accuracy against cost per 1,000 requests",
                "png": cost_plot(points),
            }
        )
    logs = {
        s.name: read_records(path, TrainLogEntry)
        for s in config.students
        if (path := run.student_dir(s.name) / "train_log.jsonl").exists()
    }
    if any(logs.values()):
        plots.append(
            {
                "file": "plots/training_loss.png",
                "title": "training loss and dev-split loss",
                "png": loss_plot(logs),
            }
        )
    return plots


def confusions(scores: dict[str, Any]) -> list[dict[str, Any]]:
    """Each candidate's confusion matrix (rows: reference label, columns: prediction)."""
    found = []
    for name, cand in _ordered(scores).items():
        confusion = cand.get("confusion")
        if confusion:
            rows = [
                {"label": label, "counts": counts}
                for label, counts in zip(confusion["labels"], confusion["matrix"])
            ]
            found.append({"candidate": name, "columns": confusion["columns"], "rows": rows})
    return found


def set_tables(scores: dict[str, Any], order: list[str] | None = None) -> dict[str, Any]:
    """The comparison table and the paired comparisons of one evaluation set (the test
    split: scores.json's top level; a transfer set: its entry under `transfer`), ready for
    the templates' `comparison` and `paired` macros."""
    candidates = _ordered(scores, order)
    metric_names = _metric_names(candidates)
    # The same model asked with the same prompt has the same answers: one row, named for all.
    groups = same_candidates(candidates, list(candidates))
    shown = {name: c for name, c in candidates.items() if name in groups}
    rows = _score_rows(shown, metric_names)
    for row in rows:
        if len(groups[row["name"]]) > 1:
            row["name"] += f" (also {', '.join(groups[row['name']][1:])})"
    strict, per_metric = _comparison_rows(scores)
    return {
        "metric_names": metric_names,
        "rows": rows,
        "comparisons": [c for c in strict if c["a"] in groups and c["b"] in groups],
        "metric_comparisons": [c for c in per_metric if c["a"] in groups and c["b"] in groups],
    }


def transfer_sections(scores: dict[str, Any]) -> list[dict[str, Any]]:
    """One report section per transfer set: where it comes from, its overlap with the
    training split, and the same tables as the test split."""
    overlaps = scores.get("checks", {}).get("transfer_overlap", {})
    return [
        {
            "name": name,
            "source": entry["source"],
            "n": entry["n"],
            "overlap": overlaps.get(name),
            **set_tables(entry, scores.get("order")),
        }
        for name, entry in scores.get("transfer", {}).items()
    ]


def training_rows(run: RunFolder, config: RunConfig) -> list[dict[str, Any]]:
    """Per trained student: its loss, rows, steps, training seconds and tokens seen (from
    students/<name>/summary.json), so the losses' costs sit beside their results."""
    found = []
    for student in config.students:
        path = run.student_dir(student.name) / "summary.json"
        if not path.exists():
            continue
        summary = read_record(path, TrainSummary)
        without = summary.kd_rows_without_teacher
        found.append(
            {
                "name": student.name,
                "loss": summary.loss,
                "rows": summary.rows,
                "steps": summary.steps,
                "seconds": _num(summary.seconds),
                "tokens": summary.tokens_seen,
                "without_teacher": "—" if without is None else without,
            }
        )
    return found


def read_scores(run: RunFolder) -> dict[str, Any]:
    """eval/scores.json as evaluate built it, parsed as `Scores` (a newer or broken file is
    named in one line)."""
    return read_record(run.eval_dir / "scores.json", Scores).as_written()


def build_context(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    scores = read_scores(run)
    summary_path = run.synth_dir / "summary.json"
    synth = read_record(summary_path, SynthSummary) if summary_path.exists() else None
    candidates = _ordered(scores)
    # scores.json is written with sorted keys; the config keeps the transfer sets' order.
    order = [t.name for t in config.evaluate.transfer]
    transfer = sorted(
        transfer_sections(scores),
        key=lambda t: order.index(t["name"]) if t["name"] in order else len(order),
    )
    # Human grades, when a grading round has any (potstill grade RUN).
    human = human_summary(run, config.evaluate.bootstrap_samples, config.grade.seed)
    return {
        "verdicts": verdicts(scores, order),
        "verdict_note": INTERVAL_NOTE,
        "human_md": render_section(human, "md") if human else None,
        "human_html": render_section(human, "html") if human else None,
        "confusions": confusions(scores),
        "name": config.name,
        "task": config.task,
        **set_tables(scores),
        "transfer": transfer,
        "judge_rows": _judge_rows(candidates),
        "judge": scores.get("judge"),
        **judge_trust_context(scores),
        "cost_rows": _cost_rows(candidates),
        "training_rows": training_rows(run, config),
        "synth": synth.as_written() if synth else None,
        "synth_cost": _cost(synth) if synth else "n/a",
        "teacher_accuracy_on_train": percent(synth.teacher_accuracy_on_train if synth else None),
        "warnings": [
            {"title": CHECK_TITLES.get(w["check"], w["check"]), "message": w["message"]}
            for w in scores.get("warnings", [])
        ],
        "overlap": scores.get("checks", {}).get("overlap"),
        "format_checks": [
            (name, scores["checks"]["format"][name])
            for name in candidates
            if name in scores.get("checks", {}).get("format", {})
        ],
        "examples": _examples(run, config, list(candidates)),
        "calculator": scores.get("calculator", False),
        "target": config.synth.target,
        "pct": percent,
        "num": _num,
    }


def report_environment() -> Environment:
    """The report's templates (HTML autoescaped, the `cell` filter for Markdown), also used
    by the Hub's model card (potstill/hub/cards.py) for the same tables."""
    return template_environment("report/templates", cell=markdown_cell)


def comparison_markdown(scores: dict[str, Any]) -> str:
    """The test split's comparison table as report.md has it (every candidate, every metric
    with its 95% interval)."""
    tables = set_tables(scores)
    module = report_environment().get_template("tables.md.j2").module
    return str(module.comparison(tables["rows"], tables["metric_names"])).strip()  # type: ignore[attr-defined]


def run_report(run: RunFolder, config: RunConfig) -> Path:
    """Write report.md, report.html and plots/; returns the path of report.md."""
    context = build_context(run, config)
    scores = read_scores(run)
    plots = _plots(run, config, _ordered(scores))
    for plot in plots:
        atomic_write_bytes(run.root / plot["file"], plot["png"])
        plot["data"] = base64.b64encode(plot["png"]).decode()
    env = report_environment()
    md = env.get_template("report.md.j2").render(**context, plots=plots)
    html = env.get_template("report.html.j2").render(**context, plots=plots)
    atomic_write_text(run.root / "report.md", md)
    atomic_write_text(run.root / "report.html", html)
    return run.root / "report.md"
