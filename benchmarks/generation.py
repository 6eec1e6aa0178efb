"""Local generation on the demo's evaluation prompts: the old path against the new one, one run.

Loads the packaged SmolLM2-135M-Instruct once and generates, greedy, for the first `--limit`
problems of the demo's test split, with the demo's two evaluation prompts:

- teacher: 8-shot chain-of-thought, 64 new tokens at most (also synth's teacher prompt);
- student: zero-shot, 24 new tokens (the base student's, the distilled student's and the
  teacher's zero-shot prompt).

Each prompt goes through each path, the paths interleaved and repeated `--repeats` times (the
best wall time counts; the machine is noisy):

- `old: growing cache, generate`: `model.generate` on transformers' DynamicCache, which
  concatenates each layer's keys and values at every step, at the demo's old batch of 16
  (`--old-batch`): the baseline;
- `buffer cache, generate`: the KV cache allocated once per batch, still `model.generate`,
  batch 16 (local generation before potstill's own decode loop);
- `new`: potstill's own decode loop (`LocalChatModel._decode_loop`: finished rows leave the
  batch, the shared few-shot prefix is kept and attended once for all rows, linear layers on
  oneDNN) at the demo's batch size (64);
- with `--ablate`, the new path less one part each: batch 16, MKL linears (no oneDNN), the
  prefix copied into every row (no shared-prefix attention);
- `new, batch N` for each `--batch` given.

It prints tokens/s, wall seconds, the speed-up over the old path, accuracy and how many replies
are identical to the old path's, per prompt and for both together (tokens over wall seconds,
summed), and writes benchmarks/results/generation.json with the load average in "note".

    PYTHONPATH=src .venv/bin/python benchmarks/generation.py [--limit 64] [--repeats 2]
        [--ablate] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from potstill.config import builtin_config_path, load_config
from potstill.models.local import LocalChatModel, _onednn_linears
from potstill.pipeline import open_run, prepare_split
from potstill.tasks import build_task
from potstill.tasks.base import chat_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=64, help="test problems (0: all 240)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--old-batch", type=int, default=16, help="the old path's batch")
    parser.add_argument("--ablate", action="store_true", help="the new path less each part")
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
    old_batch = args.old_batch
    # label: (buffer_cache, own_loop, shared_attention, onednn, batch size)
    paths: list[tuple[str, tuple[bool, bool, bool, bool, int]]] = [
        (
            f"old: growing cache, generate, batch {old_batch}",
            (False, False, False, False, old_batch),
        ),
        (f"buffer cache, generate, batch {old_batch}", (True, False, False, False, old_batch)),
        (f"new, batch {batch}", (True, True, True, True, batch)),
    ]
    if args.ablate:
        paths += [
            (f"new, batch {old_batch}", (True, True, True, True, old_batch)),
            (f"new, no oneDNN, batch {batch}", (True, True, True, False, batch)),
            (f"new, no shared prefix, batch {batch}", (True, True, False, True, batch)),
        ]
    paths += [(f"new, batch {b}", (True, True, True, True, b)) for b in args.batch]
    model = LocalChatModel(config.teacher.model.model, batch_size=batch)
    # The oneDNN copy of the weights is made once per loaded model: timed apart, not in walls.
    start = time.perf_counter()
    _onednn_linears(model.model)
    pack_s = round(time.perf_counter() - start, 2)
    prompts = {"teacher": config.teacher.prompt, "student": config.synth.prompt}
    load_before = _load()

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name, prompt in prompts.items():
        requests = chat_requests(task, prompt, test)
        for _ in range(args.repeats):
            for label, (buffer, own, shared, onednn, size) in paths:
                model.buffer_cache, model.own_loop, model.batch_size = buffer, own, size
                model.shared_attention, model.onednn = shared, onednn
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
                print(f"  {name:8} {label:40} {wall:7.1f} s", flush=True)

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
    for label, _ in paths:
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
    note = (
        f"load average (1, 5, 15 min) before: {load_before}, after: {_load()}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(f"\nLocal generation, demo test split (n = {n} per prompt), greedy, {platform.machine()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats}")
    print(f"{note}; oneDNN weight copy, once per model: {pack_s} s\n")
    head = f"{'prompt':8} {'path':40} {'tok/s':>7} {'wall s':>7} {'speedup':>8} {'accuracy':>9}"
    print(f"{head} {'same text':>10}")
    for r in results:
        total = 2 * n if r["prompt"] == "both" else n
        print(
            f"{r['prompt']:8} {r['path']:40} {r['tokens_per_s']:7.1f} {r['wall_s']:7.1f} "
            f"{r['speedup']:7.2f}x {r['accuracy']:9.1%} {r['identical_to_old']:>5}/{total}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "n": n,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "onednn_pack_s": pack_s,
        "note": note,
    }
    args.out.write_text(json.dumps({**info, "results": results}, indent=2) + "\n")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


if __name__ == "__main__":
    main()
