"""The report stage: report.md and a self-contained report.html, with a plot."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from potstill.config import RunConfig
from potstill.runs import RunFolder, atomic_write_bytes, atomic_write_text


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _plot(path: Path, candidates: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(candidates)  # already in report order
    acc = [100 * (candidates[n]["accuracy"] or 0.0) for n in names]
    low = [a - 100 * candidates[n]["ci_low"] for a, n in zip(acc, names)]
    high = [100 * candidates[n]["ci_high"] - a for a, n in zip(acc, names)]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.bar(names, acc, yerr=[low, high], capsize=6, color="#4c72b0")
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(f"Test accuracy (n = {next(iter(candidates.values()))['n']})")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())


def _cost(synth: dict[str, Any]) -> str:
    """The teacher's bill for the synthetic data, from synth/summary.json."""
    cost = synth.get("cost")
    if not cost:
        return "not recorded"
    tokens = f"{cost['calls']} calls, {cost['prompt_tokens']} + {cost['completion_tokens']} tokens"
    return f"${cost['usd']:.4f} ({tokens})" if cost["priced"] else f"no price set ({tokens})"


def _ordered(scores: dict[str, Any]) -> dict[str, Any]:
    """Candidates in evaluation order: teacher, base student, trained students."""
    order = scores.get("order") or list(scores["candidates"])
    return {name: scores["candidates"][name] for name in order}


def _warnings(scores: dict[str, Any]) -> list[str]:
    found = []
    for name, cand in scores["candidates"].items():
        failed = cand["no_answer_rate"] + cand["malformed_rate"] + cand["call_failed_rate"]
        if failed >= 0.05:
            found.append(
                f"{name}: {_pct(failed)} of replies gave no usable answer "
                f"(no_answer {_pct(cand['no_answer_rate'])}, malformed "
                f"{_pct(cand['malformed_rate'])}, failed calls "
                f"{_pct(cand['call_failed_rate'])}); they count as wrong."
            )
        gap = (cand["flexible_accuracy"] or 0.0) - (cand["accuracy"] or 0.0)
        if gap >= 0.10:
            found.append(
                f"{name}: strict accuracy {_pct(cand['accuracy'])}, flexible "
                f"{_pct(cand['flexible_accuracy'])}: many replies hold a right answer outside "
                "the asked format."
            )
    for comp in scores["comparisons"]:
        if comp["ci_low"] <= 0 <= comp["ci_high"]:
            found.append(
                f"{comp['a']} vs {comp['b']}: the 95% interval of the difference "
                "includes zero; this test split cannot tell them apart."
            )
    return found


def build_context(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    scores = json.loads((run.eval_dir / "scores.json").read_text(encoding="utf-8"))
    synth = json.loads((run.synth_dir / "summary.json").read_text(encoding="utf-8"))
    rows = []
    for name, c in _ordered(scores).items():
        rows.append(
            {
                "name": name,
                "role": c["role"],
                "model": c["model"],
                "how": f"{c['prompt_style']}, {c['shots']}-shot"
                + (f"; {c['procedure']}" if c.get("procedure") else ""),
                "accuracy": _pct(c["accuracy"]),
                "ci": f"[{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]",
                "flexible": f"{_pct(c['flexible_accuracy'])} "
                f"[{_pct(c['flexible_ci_low'])}, {_pct(c['flexible_ci_high'])}]",
                "n": c["n"],
                "no_answer": _pct(c["no_answer_rate"] + c["malformed_rate"]),
                "tokens": f"{c['mean_completion_tokens']:.1f}",
                "prompt_tokens": f"{c['mean_prompt_tokens']:.0f}",
                "latency": f"{c['mean_latency_s']:.3f}",
            }
        )
    comparisons = [
        {
            **c,
            "diff": f"{100 * c['difference']:+.1f} pts",
            "ci": f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]",
            "p": f"{c['mcnemar_p']:.3g}",
            "flexible_diff": f"{100 * c['flexible']['difference']:+.1f} pts "
            f"[{100 * c['flexible']['ci_low']:+.1f}, {100 * c['flexible']['ci_high']:+.1f}]",
        }
        for c in scores["comparisons"]
    ]
    return {
        "name": config.name,
        "task": config.task,
        "rows": rows,
        "comparisons": comparisons,
        "synth": synth,
        "teacher_accuracy_on_train": _pct(synth["teacher_accuracy_on_train"]),
        "synth_cost": _cost(synth),
        "warnings": _warnings(scores),
        "calculator": scores.get("calculator", False),
        "target": config.synth.target,
    }


def run_report(run: RunFolder, config: RunConfig) -> Path:
    """Write report.md, report.html and plots/; returns the path of report.md."""
    context = build_context(run, config)
    scores = json.loads((run.eval_dir / "scores.json").read_text(encoding="utf-8"))
    plot = run.root / "plots" / "accuracy.png"
    _plot(plot, _ordered(scores))
    env = Environment(
        loader=PackageLoader("potstill", "report/templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    md = env.get_template("report.md.j2").render(**context, plot="plots/accuracy.png")
    image = base64.b64encode(plot.read_bytes()).decode()
    html = env.get_template("report.html.j2").render(**context, plot_data=image)
    atomic_write_text(run.root / "report.md", md)
    atomic_write_text(run.root / "report.html", html)
    return run.root / "report.md"
