"""The training plot: each student's loss curve and its eval loss on the dev split."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from potstill.config import RunConfig
from potstill.runs import RunFolder, atomic_write_bytes, read_jsonl


def plot_training(run: RunFolder, config: RunConfig, path: Path) -> bool:
    """Write plots/training.png from students/*/train_log.jsonl; False when no log exists."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for student in config.students:
        log_path = run.student_dir(student.name) / "train_log.jsonl"
        if log_path.exists():
            curves[student.name] = read_jsonl(log_path)
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    for i, (name, log) in enumerate(curves.items()):
        color = f"C{i}"
        train = [(e["step"], e["loss"]) for e in log if "loss" in e]
        dev = [(e["step"], e["eval_loss"]) for e in log if "eval_loss" in e]
        if train:
            ax.plot(*zip(*train), color=color, lw=1, label=f"{name} train")
        if dev:
            ax.plot(*zip(*dev), color=color, ls="--", marker="o", ms=3, label=f"{name} dev")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (reply tokens)")
    ax.set_title("Training loss and dev-split loss per student")
    ax.legend(fontsize=7)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())
    return True
