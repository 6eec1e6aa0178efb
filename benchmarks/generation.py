"""Local generation on the demo's evaluation prompts: the old path against today's, one run.

Loads the packaged SmolLM2-135M-Instruct once and generates, greedy, for the first `--limit`
problems of the demo's test split, with the demo's two evaluation prompts:

- teacher: 8-shot chain-of-thought, 64 new tokens at most (also synth's teacher prompt);
- student: zero-shot, 24 new tokens (the base student's, the distilled student's and the
  teacher's zero-shot prompt).

Each prompt goes through each path, the paths interleaved and repeated `--repeats` times (the
best wall time counts; the machine is noisy):

- `growing cache`: transformers' DynamicCache, which concatenates each layer's keys and values
  at every step (local generation before the buffer cache), at the demo's batch size;
- `buffer cache`: the KV cache allocated once per batch (`potstill.models.local`), same batch;
- `buffer cache, batch N` for each `--batch` given: the same path at another batch size.

It prints tokens/s, wall seconds, accuracy and how many replies are identical to the old
path's, per prompt and for both together, and writes benchmarks/results/generation.json.

    .venv/bin/python benchmarks/generation.py [--limit 64] [--repeats 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from potstill.config import builtin_config_path, load_config
from potstill.models.local import LocalChatModel
from potstill.pipeline import open_run, prepare_split
from potstill.tasks import build_task
from potstill.tasks.base import chat_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=64, help="test problems (0: all 240)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, action="append", default=[], help="extra sizes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generation.json"))
    args = parser.parse_args()

    import torch

    config = load_config(builtin_config_path("demo"))
    task = build_task(config.task)
    with tempfile.TemporaryDirectory() as tmp:
        test = prepare_split(open_run(config, Path(tmp)), config, pin=False).test
    test = test[: args.limit or None]
    batch = config.teacher.model.batch_size
    paths = [("growing cache", False, batch), ("buffer cache", True, batch)]
    paths += [(f"buffer cache, batch {b}", True, b) for b in args.batch]
    model = LocalChatModel(config.teacher.model.model, batch_size=batch)
    prompts = {"teacher": config.teacher.prompt, "student": config.synth.prompt}

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name, prompt in prompts.items():
        requests = chat_requests(task, prompt, test)
        for _ in range(args.repeats):
            for label, buffer, size in paths:
                model.buffer_cache, model.batch_size = buffer, size
                start = time.perf_counter()
                replies = model.generate_sync(requests)
                wall = time.perf_counter() - start
                row = rows.setdefault((name, label), {"walls": []})
                row["walls"].append(round(wall, 2))
                row["texts"] = [r.text or "" for r in replies]
                row["tokens"] = sum(r.completion_tokens for r in replies)
                parsed = [
                    task.parse(r.text or "", prompt.style, e.inputs) for e, r in zip(test, replies)
                ]
                row["accuracy"] = sum(
                    task.score(p, e.reference) for p, e in zip(parsed, test)
                ) / len(test)
                print(f"  {name:8} {label:24} {wall:7.1f} s", flush=True)

    results = []
    for (name, label), row in rows.items():
        old = rows[(name, paths[0][0])]
        wall = min(row["walls"])
        results.append(
            {
                "prompt": name,
                "path": label,
                "wall_s": wall,
                "walls_s": row["walls"],
                "completion_tokens": row["tokens"],
                "tokens_per_s": round(row["tokens"] / wall, 1),
                "accuracy": round(row["accuracy"], 4),
                "identical_to_old": sum(a == b for a, b in zip(row["texts"], old["texts"])),
                "speedup": round(min(old["walls"]) / wall, 2),
            }
        )
    per_prompt = list(results)
    for label, _, _ in paths:
        mine = [r for r in per_prompt if r["path"] == label]
        old = [r for r in per_prompt if r["path"] == paths[0][0]]
        wall = sum(r["wall_s"] for r in mine)
        results.append(
            {
                "prompt": "both",
                "path": label,
                "wall_s": round(wall, 2),
                "completion_tokens": sum(r["completion_tokens"] for r in mine),
                "tokens_per_s": round(sum(r["completion_tokens"] for r in mine) / wall, 1),
                "accuracy": round(sum(r["accuracy"] for r in mine) / len(mine), 4),
                "identical_to_old": sum(r["identical_to_old"] for r in mine),
                "speedup": round(sum(r["wall_s"] for r in old) / wall, 2),
            }
        )

    n = len(test)
    print(f"\nLocal generation, demo test split (n = {n} per prompt), greedy, {platform.machine()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats}\n")
    head = f"{'prompt':8} {'path':24} {'tok/s':>7} {'wall s':>7} {'speedup':>8} {'accuracy':>9}"
    print(f"{head} {'same text':>10}")
    for r in results:
        total = 2 * n if r["prompt"] == "both" else n
        print(
            f"{r['prompt']:8} {r['path']:24} {r['tokens_per_s']:7.1f} {r['wall_s']:7.1f} "
            f"{r['speedup']:7.2f}x {r['accuracy']:9.1%} {r['identical_to_old']:>5}/{total}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = {"n": n, "repeats": args.repeats, "threads": torch.get_num_threads()}
    args.out.write_text(json.dumps({**info, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
