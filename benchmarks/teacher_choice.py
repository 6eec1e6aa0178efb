"""Teacher options for the demo, measured on the demo's own test split.

Runs each teacher procedure (prompt style x number of worked examples) over the demo's held-out
problems with the packaged SmolLM2-135M-Instruct, and prints accuracy with a 95% interval,
the no-answer rate, tokens per reply and seconds. It uses the demo's run folder and its
calls.sqlite, so the demo teacher's own test replies are reused and a second run only prints.

    .venv/bin/python benchmarks/teacher_choice.py [--runs-dir runs] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from potstill.config import PromptConfig, builtin_config_path, load_config
from potstill.evaluate.stage import Candidate, predict, summarize
from potstill.pipeline import open_run, prepare_split
from potstill.tasks import build_task


def variants(demo_prompt: PromptConfig) -> dict[str, PromptConfig]:
    shots = demo_prompt.shots
    return {
        "zero-shot, expression only": PromptConfig(style="zero_shot", max_tokens=24),
        "zero-shot CoT (JSON)": PromptConfig(style="cot", max_tokens=64),
        "4-shot, expression only": PromptConfig(
            style="zero_shot",
            max_tokens=24,
            shots=[s.model_copy(update={"reason": None}) for s in shots[:4]],
        ),
        "8-shot, expression only": PromptConfig(
            style="zero_shot",
            max_tokens=24,
            shots=[s.model_copy(update={"reason": None}) for s in shots],
        ),
        "8-shot CoT (JSON) [demo teacher]": demo_prompt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N test items")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/teacher_choice.json"))
    args = parser.parse_args()

    config = load_config(builtin_config_path("demo"))
    run = open_run(config, args.runs_dir)
    task = build_task(config.task)
    test = prepare_split(run, config).test[: args.limit]
    results = {}
    for name, prompt in variants(config.teacher.prompt).items():
        start = time.perf_counter()
        rows = predict(run, task, Candidate(name, "teacher", config.teacher.model, prompt), test)
        summary = summarize(rows, 2000, 0)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        results[name] = summary
    print(f"\nTeacher options on the demo test split (n = {len(test)}), calculator on\n")
    print(f"{'procedure':36} {'accuracy':>9} {'95% CI':>17} {'no answer':>10} {'tokens':>7}")
    for name, s in results.items():
        no_answer = s["no_answer_rate"] + s["malformed_rate"]
        print(
            f"{name:36} {s['accuracy']:9.1%} [{s['ci_low']:6.1%}, {s['ci_high']:6.1%}] "
            f"{no_answer:10.1%} {s['mean_completion_tokens']:7.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": len(test), "results": results}, indent=2))


if __name__ == "__main__":
    main()
