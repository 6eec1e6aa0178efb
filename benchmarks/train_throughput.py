"""Real (non-pad) tokens per second of potstill's train stage against TRL's SFTTrainer with its
defaults, on the same model, the same rows and the same optimization settings (CPU).

Model: the packaged SmolLM2-135M-Instruct with LoRA r=16 on every linear layer (the train
stage's default). Data: arithmetic word problems asked with the chain-of-thought prompt, each
reply a teacher-like JSON {"reason", "answer"} whose length is drawn uniformly from 60-400
tokens. Every run trains on the same rows for the same epochs with the same batch size,
learning rate, schedule, warm-up and seed; what differs is what each side does by default:

- trl_defaults: SFTConfig's own defaults for everything else (random batches padded to the
  longest row, gradient checkpointing on, max_length 1024), except bf16: SFTConfig turns bf16
  on by default, and on a machine without a bf16 GPU TrainingArguments then refuses to start
  ("Your setup doesn't support bf16/gpu"), so bf16 is off, as anyone training on a CPU sets it.
- trl_fp32: the same, and gradient checkpointing off too, as potstill has it.
- potstill: the train stage's trainer (`build_trainer`) with its defaults. On a CPU that is
  padding-free batches (each batch one packed row, positions restarting per row) with the
  `potstill_varlen` attention, which runs causal SDPA on each row alone there: no padding, no
  dense mask, no row sees another; and the LM head projected only at labelled positions.
- potstill_length_grouped: the train stage with `batching: length_grouped` (padded batches of
  rows of similar length, SDPA with the padding mask; the default where no packing kernel is
  available), the LM head as above.
- trl_defaults_reordered: trl_defaults with another data order (data seed + 1), the same
  initial weights: how far the held-out loss moves with the order of the rows alone, which is
  the noise the other runs' held-out losses are compared against.

Real tokens/s = tokens of the tokenized rows (no padding) x epochs / training seconds, the mean
of --timing-passes passes (the first in the listed order, the next reversed) so that a slow
patch on a shared machine does not fall on one run; tokens per CPU-second of this process is
printed beside it. Loss: the held-out loss (fp32, per-token mean over reply tokens) of each
trained model on dev rows no run trained on, and its paired bootstrap interval against
trl_defaults per dev row.

    flock /tmp/potstill-cpu.lock .venv/bin/python benchmarks/train_throughput.py \
        [--rows 24 --dev-rows 8 --timing-passes 1]    # about 8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from potstill.config import ModelConfig, PromptConfig, StudentConfig, TaskConfig, TrainConfig
from potstill.data.stories import make_problems
from potstill.models.packaged import load_pretrained
from potstill.tasks import build_task

MODEL = "packaged:smollm2-135m-instruct"
STEPS = [
    "{name} starts with {a} {obj}, so the first number in the story is {a}.",
    "The other number in the story is {b}, and it tells how much changes.",
    "The words of the question decide the operation, so read them again carefully.",
    "Check the units: both numbers count {obj}, so they can be combined directly.",
    "Writing the expression first and working it out afterwards avoids slips.",
    "Nothing else in the story changes the amount, so no further step is needed.",
]


def teacher_rows(n: int, seed: int, tokenizer: Any) -> list[dict[str, Any]]:
    """Teacher-CoT-like rows: reply lengths uniform in 60-400 tokens."""
    task = build_task(TaskConfig(kind="math", calculator=True))
    prompt = PromptConfig(style="cot", max_tokens=512)
    rng = random.Random(seed)
    rows = []
    for problem in make_problems(n, seed):
        target = rng.randint(60, 400)
        a, b = (int(x) for x in problem["expr"].split()[::2])
        facts = {"name": problem["question"].split()[0], "a": a, "b": b, "obj": "items"}
        reason, k = "", 0
        while True:
            step = STEPS[k % len(STEPS)].format(**facts)
            candidate = f"{reason} Step {k + 1}: {step}".strip()
            reply = json.dumps({"reason": candidate, "answer": problem["expr"]})
            if len(tokenizer(reply)["input_ids"]) > target and reason:
                break
            reason, k = candidate, k + 1
        reply = json.dumps({"reason": reason, "answer": problem["expr"]})
        rows.append(
            {
                "id": problem["id"],
                "prompt": task.messages({"question": problem["question"]}, prompt),
                "completion": [{"role": "assistant", "content": reply}],
                "rationale": reason,
            }
        )
    return rows


class CountingCollator:
    """Wraps a collator and counts the token positions the model computes on, and the real ones."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.positions = 0
        self.real = 0

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.inner(features)
        self.positions += batch["input_ids"].numel()
        mask = batch.get("attention_mask")
        # a packed batch has no padding: every position is a real token
        self.real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        return batch


def _lora() -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def trl_trainer(rows: list[dict[str, Any]], args: argparse.Namespace, out: Path, fp32: bool) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(args.seed)
    tokenizer, model = load_pretrained(MODEL)
    # bf16 off in both: SFTConfig's default bf16=True does not start on a machine without a GPU.
    options: dict[str, Any] = {"bf16": False}
    if fp32:
        options["gradient_checkpointing"] = False
    config = SFTConfig(
        output_dir=str(out),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        seed=args.seed,
        data_seed=getattr(args, "data_seed", args.seed),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **options,
    )
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=_lora(),
    )


def potstill_trainer(
    rows: list[dict[str, Any]], args: argparse.Namespace, out: Path, length_grouped: bool
) -> Any:
    from potstill.train.stage import build_trainer

    train = TrainConfig(
        method="lora",
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        dev_fraction=0.0,
        save_steps=10_000,
        seed=args.seed,
        max_length=1024,
        batching="length_grouped" if length_grouped else "auto",
    )
    student = StudentConfig(name="bench", base=ModelConfig(model=MODEL), train=train)
    prep = build_trainer(student, rows, out)
    prep.trainer.args.disable_tqdm = True
    return prep.trainer


def heldout_losses(trainer: Any, dev: list[dict[str, Any]]) -> list[float]:
    """Per dev row: mean cross-entropy over the reply tokens, fp32, no autocast."""
    from potstill.train.lint import IGNORE

    tokenizer = trainer.processing_class
    model = trainer.model.float().eval()
    losses = []
    for row in dev:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"])
        prompt_ids = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        ids = list(full["input_ids"] if hasattr(full, "keys") else full)
        labels = [IGNORE] * len(prompt_ids) + ids[len(prompt_ids) :]
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        losses.append(float(out.loss))
    return losses


def run_one(
    name: str, rows: list[dict[str, Any]], dev: list[dict[str, Any]], args: Any, heldout: bool
) -> dict[str, Any]:
    """Train once; time it on the wall clock and in this process's CPU time (which other
    programs on a shared machine disturb less)."""
    with tempfile.TemporaryDirectory() as tmp:
        if name.startswith("potstill"):
            grouped = name == "potstill_length_grouped"
            trainer = potstill_trainer(rows, args, Path(tmp), length_grouped=grouped)
        else:
            reordered = name == "trl_defaults_reordered"
            order = argparse.Namespace(**{**vars(args), "data_seed": args.seed + int(reordered)})
            trainer = trl_trainer(rows, order, Path(tmp), fp32=name == "trl_fp32")
        counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        real = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.epochs
        start, cpu = time.perf_counter(), time.process_time()
        trainer.train()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        last_epoch = losses[-max(1, len(losses) // int(max(args.epochs, 1))) :]
        result = {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "real_tokens": real,
            "real_tokens_per_s": real / seconds,
            "real_tokens_per_cpu_s": real / cpu_seconds,
            "positions_computed": counter.positions,
            "padding_share": 1 - counter.real / counter.positions,
            "steps": len(losses),
            "step_losses": losses,
            "final_train_loss": statistics.fmean(last_epoch),
        }
        if heldout:
            per_row = heldout_losses(trainer, dev)
            result.update(heldout_loss=statistics.fmean(per_row), heldout_per_row=per_row)
    return result


def paired_interval(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    diffs = [x - y for x, y in zip(a, b)]
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choice(diffs) for _ in diffs) for _ in range(2000))
    return statistics.fmean(diffs), means[50], means[1949]


def summarize(passes: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per run: the first pass's losses, the tokens/s of every pass and their mean."""
    found: dict[str, Any] = {}
    for name, runs in passes.items():
        found[name] = {
            **runs[0],
            "real_tokens_per_s_passes": [r["real_tokens_per_s"] for r in runs],
            "real_tokens_per_s": statistics.fmean(r["real_tokens_per_s"] for r in runs),
            "real_tokens_per_cpu_s": statistics.fmean(r["real_tokens_per_cpu_s"] for r in runs),
        }
    base = found.get("trl_defaults")
    for name, r in found.items():
        if base and name != "trl_defaults" and "heldout_per_row" in r:
            d, lo, hi = paired_interval(r["heldout_per_row"], base["heldout_per_row"])
            r["heldout_diff_vs_trl_defaults"] = {"mean": d, "ci_low": lo, "ci_high": hi}
    return found


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    base = results.get("trl_defaults")
    print(
        f"\n{args.rows} rows x {args.epochs:g} epoch(s), batch {args.batch_size}, "
        f"SmolLM2-135M + LoRA r16, {torch.get_num_threads()} CPU threads\n"
    )
    head = ["run", "real tok/s", "per pass", "vs TRL", "tok/CPU-s", "padding", "held-out"]
    print(f"{head[0]:23}" + "".join(f"{h:>14}" for h in head[1:]) + "   held-out - TRL [95% CI]")
    for name, r in results.items():
        ratio = r["real_tokens_per_s"] / base["real_tokens_per_s"] if base else float("nan")
        diff = r.get("heldout_diff_vs_trl_defaults")
        cells = [
            f"{r['real_tokens_per_s']:.1f}",
            "/".join(f"{x:.0f}" for x in r["real_tokens_per_s_passes"]),
            f"{ratio:.2f}x",
            f"{r['real_tokens_per_cpu_s']:.1f}",
            f"{r['padding_share']:.1%}",
            f"{r['heldout_loss']:.4f}" if "heldout_loss" in r else "-",
        ]
        note = (
            f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]" if diff else ""
        )
        print(f"{name:23}" + "".join(f"{c:>14}" for c in cells) + f"   {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--dev-rows", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runs",
        default="potstill,potstill_length_grouped,trl_defaults,trl_defaults_reordered",
        help="any of potstill, potstill_length_grouped, trl_defaults, trl_fp32, "
        "trl_defaults_reordered",
    )
    parser.add_argument("--timing-passes", type=int, default=1)
    default_out = Path("benchmarks/results/train_throughput.json")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()

    tokenizer, _ = load_pretrained(MODEL)
    every = teacher_rows(args.rows + args.dev_rows, args.seed, tokenizer)
    rows, dev = every[: args.rows], every[args.rows :]
    # The first training in a process pays one-off costs (kernel set-up, first page-in of the
    # weights) that would fall on whichever run comes first; a short throw-away run takes them.
    warm = argparse.Namespace(**{**vars(args), "epochs": 1.0, "batch_size": 2})
    run_one("trl_fp32", rows[:2], dev[:1], warm, heldout=False)
    names = args.runs.split(",")
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    # Pass 1 in the listed order (with the held-out loss), later passes reversed and timed only,
    # so a slow patch on a shared machine does not fall on one run alone.
    timed = [n for n in names if n != "trl_defaults_reordered"]
    for k in range(args.timing_passes):
        for name in names if k == 0 else (timed[::-1] if k % 2 else timed):
            print(f"--- {name} (pass {k + 1})", flush=True)
            r = run_one(name, rows, dev, args, heldout=k == 0)
            passes[name].append(r)
            print(
                f"{name}: {r['real_tokens_per_s']:.1f} real tok/s, {r['seconds']:.0f} s", flush=True
            )
    results = summarize(passes)
    print_table(results, args)
    if "trl_defaults" in results:
        base = results["trl_defaults"]
        for name in ("potstill", "potstill_length_grouped"):
            if name in results:
                r = results[name]
                ratio = r["real_tokens_per_s"] / base["real_tokens_per_s"]
                print(
                    f"{name} vs trl_defaults: {ratio:.2f}x "
                    f"real tokens/s; final train loss {r['final_train_loss']:.4f} vs "
                    f"{base['final_train_loss']:.4f}"
                )
    if "trl_fp32" in results and "potstill" in results:
        ratio = results["potstill"]["real_tokens_per_s"] / results["trl_fp32"]["real_tokens_per_s"]
        print(f"\npotstill vs trl_fp32 (only the batching differs): {ratio:.2f}x real tokens/s")
    meta = {
        "rows": args.rows, "dev_rows": args.dev_rows, "epochs": args.epochs,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "model": MODEL, "lora_r": 16, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "reply_tokens": "uniform 60-400",
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
