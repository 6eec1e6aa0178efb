"""The report's plots, drawn with matplotlib into PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Any

from potstill.records import TrainLogEntry


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    image = io.BytesIO()
    fig.tight_layout()
    fig.savefig(image, format="png")
    plt.close(fig)
    return image.getvalue()


def metric_plot(metric: str, entries: dict[str, dict[str, Any]]) -> bytes:
    """One bar per candidate with its 95% interval; candidates without the metric are left out."""
    plt = _pyplot()
    names = [n for n, e in entries.items() if e.get("value") is not None]
    percent = any(entries[n].get("percent") for n in names)
    scale = 100.0 if percent else 1.0
    values = [scale * entries[n]["value"] for n in names]
    # A percentile interval of a corpus metric (macro-F1) can sit beside its point estimate;
    # the bar then shows no error on that side rather than failing.
    low = [
        max(0.0, v - scale * _finite(entries[n]["ci_low"], entries[n]["value"]))
        for v, n in zip(values, names)
    ]
    high = [
        max(0.0, scale * _finite(entries[n]["ci_high"], entries[n]["value"]) - v)
        for v, n in zip(values, names)
    ]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    ax.bar(names, values, yerr=[low, high], capsize=6, color="#4c72b0")
    ns = sorted({entries[n]["n"] for n in names})
    ax.set_ylabel(f"{metric}{' (%)' if percent else ''}, 95% CI")
    ax.set_title(f"{metric} per candidate (n = {', '.join(map(str, ns))})")
    if percent:
        ax.set_ylim(0, 100)
    ax.tick_params(axis="x", labelrotation=15)
    return _png(fig)


def _finite(value: float | None, fallback: float) -> float:
    return fallback if value is None or math.isnan(value) else value


def cost_plot(points: list[dict[str, Any]]) -> bytes:
    """Accuracy (with its interval) against dollars per 1,000 requests, one point per candidate."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for p in points:
        value = 100 * p["value"]
        err = [[value - 100 * p["ci_low"]], [100 * p["ci_high"] - value]]
        ax.errorbar(p["cost"], value, yerr=err, fmt="o", capsize=5)
        ax.annotate(p["name"], (p["cost"], value), textcoords="offset points", xytext=(6, 6))
    costs = [p["cost"] for p in points if p["cost"] > 0]
    if costs and max(costs) / min(costs) > 20 and len(costs) == len(points):
        ax.set_xscale("log")
    ax.set_xlabel("cost per 1,000 requests ($)")
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy against cost")
    ax.grid(alpha=0.3)
    return _png(fig)


def loss_plot(logs: dict[str, list[TrainLogEntry]]) -> bytes:
    """Training loss per optimizer step, one line per student, and its loss on the dev split
    (dashed, same colour) where the log has one."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    for i, (name, entries) in enumerate(logs.items()):
        color = f"C{i % 10}"
        points = [(e.step, e.loss) for e in entries if e.loss is not None]
        ax.plot([s for s, _ in points], [v for _, v in points], color=color, label=name)
        dev = [(e.step, e.eval_loss) for e in entries if e.eval_loss is not None]
        if dev:
            ax.plot(
                [s for s, _ in dev],
                [v for _, v in dev],
                color=color,
                ls="--",
                marker="o",
                ms=3,
                label=f"{name} (dev)",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (reply tokens)")
    ax.set_title("Training loss and dev-split loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)
