"""Training throughput on one GPU: real (non-pad) tokens/s and MFU, for several batching and
attention strategies, on random-init Llama shapes of 135M and 1B parameters in bf16.

MFU = 6 x parameters x real tokens / seconds / peak, with peak the card's measured bf16
matrix-product rate (--peak-tflops, 790 for an H100 or H200). Rows are random token ids with
lengths drawn uniformly from 64-1024; the loss covers every real token. Weights and optimizer
are fp32 with bf16 autocast (what the train stage does with bf16 mixed precision); AdamW fused.

Strategies (same rows, same model shape; each in a fresh model):
  padded_random         batches of --rows-per-batch random rows, padded to the longest; SDPA
  length_grouped        the same rows per batch, grouped by length (potstill's sampler); SDPA
  packed_varlen         each batch's rows concatenated in one row, positions restarting per row;
                        potstill_varlen attention (PyTorch's flash varlen kernel, no mask)
  packed_varlen_ce      the same + a chunked cross-entropy that never builds the full logits
  packed_static_compiled rows packed best-fit into fixed --tokens-per-batch bins (one shape),
                        decoder layers torch.compile'd, varlen attention, chunked CE
  packed_flex           fixed bins, flex_attention with the block mask transformers builds from
                        position ids, chunked CE
  packed_sdpa           each batch concatenated, SDPA with the dense block-diagonal mask
Packed strategies first check that rows do not see each other: each of four rows' loss packed
vs alone (bf16, so a small difference is rounding).

Depends on torch + transformers and potstill's own attention module only (no TRL):

    PYTHONPATH=src python benchmarks/gpu_train.py --out $OUT/gpu_train.json
    PYTHONPATH=src python benchmarks/gpu_train.py --smoke       # tiny shape, runs on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from potstill.train import attention
from potstill.train.batching import length_grouped_batches

IGNORE = -100
SHAPES: dict[str, dict[str, Any]] = {
    # SmolLM2-135M
    "135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0),
    # Llama-3.2-1B
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0),
    "smoke": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0),
}  # fmt: skip
ALL = [  # in order of interest, since a time budget may cut the list short
    "padded_random",
    "length_grouped",
    "packed_varlen_ce",
    "packed_static_compiled",
    "packed_varlen",
    "packed_flex",
    "packed_sdpa",
]


# ---- data -------------------------------------------------------------------------------


def make_rows(n: int, low: int, high: int, vocab: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    return [torch.randint(3, vocab, (rng.randint(low, high),), generator=gen) for _ in range(n)]


def random_batches(n: int, per: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + per] for i in range(0, n - per + 1, per)]


def grouped_batches(lengths: list[int], per: int, seed: int) -> list[list[int]]:
    return [b for b in length_grouped_batches(lengths, per, seed) if len(b) == per]


def bins(lengths: list[int], budget: int, seed: int) -> list[list[int]]:
    """Best-fit decreasing: rows into bins of at most `budget` tokens, bins in random order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    found: list[list[int]] = []
    room: list[int] = []
    for i in order:
        fits = [b for b in range(len(found)) if room[b] >= lengths[i]]
        if fits:
            best = min(fits, key=room.__getitem__)
            found[best].append(i)
            room[best] -= lengths[i]
        else:
            found.append([i])
            room.append(budget - lengths[i])
    random.Random(seed).shuffle(found)
    return found


def padded(rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "use_cache": False}


def packed(
    rows: list[torch.Tensor], width: int | None = None, slots: int | None = None, max_len: int = 0
) -> dict[str, Any]:
    """One row: sequences one after the other, positions restarting at 0, the first label of
    each sequence ignored (nothing before it to predict it from). With `width`, a filler
    sequence pads to a fixed length; with `slots`, the boundaries are padded with empty
    sequences to a fixed count, so a compiled model sees one shape."""
    seqs = list(rows)
    total = sum(len(r) for r in seqs)
    longest = max_len or max(len(r) for r in seqs)
    if width is not None and width > total:  # filler: sequences of at most `longest` tokens
        seqs += list(torch.zeros(width - total, dtype=torch.long).split(longest))
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(len(r)) for r in seqs])[None]
    labels = ids.clone()
    labels[pos == 0] = IGNORE
    if width is not None and width > total:
        labels[0, total:] = IGNORE
    cu = torch.tensor([0, *torch.tensor([len(r) for r in seqs]).cumsum(0).tolist()])
    if slots is not None:
        cu = torch.cat([cu, cu[-1:].repeat(slots + 1 - len(cu))])
    return {
        "input_ids": ids,
        "position_ids": pos,
        "labels": labels,
        "cu_seq_lens_q": cu.to(torch.int32),
        "cu_seq_lens_k": cu.to(torch.int32),
        "max_length_q": longest,
        "max_length_k": longest,
        # No KV cache: with one, transformers skips finding the packed sequences in the
        # positions, and SDPA / flex would attend across them.
        "use_cache": False,
    }


# ---- loss -------------------------------------------------------------------------------


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean next-token cross-entropy through the LM head, a chunk of tokens at a time: the
    (tokens x vocab) logits never exist whole. The gradients are computed in the forward pass
    (no recomputation), as fused linear cross-entropy kernels do."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int
    ) -> torch.Tensor:  # type: ignore[override]
        count = (labels != IGNORE).sum().clamp(min=1)
        w = weight.to(torch.bfloat16) if hidden.is_cuda else weight.to(hidden.dtype)
        h_all = hidden.to(w.dtype)
        grad_h = torch.empty_like(h_all)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, h_all.shape[0], chunk):
            h, y = h_all[s : s + chunk], labels[s : s + chunk]
            keep = (y != IGNORE)[:, None]
            logits = (h @ w.t()).float()
            lse = torch.logsumexp(logits, -1, keepdim=True)
            target = y.clamp(min=0)[:, None]
            total += ((lse - logits.gather(-1, target)) * keep).sum()
            grad = (logits - lse).exp_()
            grad.scatter_add_(-1, target, torch.full_like(target, -1, dtype=grad.dtype))
            grad = (grad * keep).to(w.dtype)
            grad_h[s : s + chunk] = grad @ w
            grad_w += (grad.t() @ h).float()
        ctx.save_for_backward(grad_h, grad_w, count)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad_out / count
        return (grad_h * scale).to(ctx.dtypes[0]), (grad_w * scale).to(ctx.dtypes[1]), None, None


def chunked_loss(model: Any, batch: dict[str, Any], chunk: int = 4096) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**inputs).last_hidden_state
    labels = batch["labels"]
    shifted = torch.full_like(labels, IGNORE)
    shifted[:, :-1] = labels[:, 1:]
    flat = hidden.reshape(-1, hidden.shape[-1])
    return ChunkedCrossEntropy.apply(flat, model.lm_head.weight, shifted.reshape(-1), chunk)  # type: ignore[no-any-return]


def model_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    return model(**batch).loss  # type: ignore[no-any-return]


# ---- strategies -------------------------------------------------------------------------


def build_model(shape: str, attn: str, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    shape_args = dict(SHAPES[shape])
    rope = {"rope_type": "default", "rope_theta": shape_args.pop("rope_theta")}
    config = LlamaConfig(
        **shape_args, rope_parameters=rope, tie_word_embeddings=True, max_position_embeddings=2048
    )
    torch.manual_seed(0)
    with device:
        return AutoModelForCausalLM.from_config(
            config, attn_implementation=attn, dtype=torch.float32
        )


def plan(
    name: str, rows: list[torch.Tensor], args: argparse.Namespace, max_len: int
) -> tuple[str, Callable[[], Iterator[dict[str, Any]]], Callable[..., torch.Tensor], bool]:
    """(attention implementation, batch source, loss function, compile?) for a strategy."""
    lengths = [len(r) for r in rows]
    per, budget = args.rows_per_batch, args.tokens_per_batch
    slots = budget // args.min_len + budget // args.max_len + 2  # rows + filler pieces

    def cycle(
        batches: list[list[int]], make: Callable[[list[torch.Tensor]], dict[str, Any]]
    ) -> Callable[[], Iterator[dict[str, Any]]]:
        def source() -> Iterator[dict[str, Any]]:
            while True:
                for b in batches:
                    yield make([rows[i] for i in b])

        return source

    rand = random_batches(len(rows), per, args.seed)
    static = bins(lengths, budget, args.seed)
    flat = lambda rs: packed(rs, max_len=max_len)  # noqa: E731
    fixed = lambda rs: packed(rs, width=budget, slots=slots, max_len=max_len)  # noqa: E731
    table = {
        "padded_random": ("sdpa", cycle(rand, padded), model_loss, False),
        "length_grouped": (
            "sdpa",
            cycle(grouped_batches(lengths, per, args.seed), padded),
            model_loss,
            False,
        ),
        "packed_varlen": (attention.NAME, cycle(rand, flat), model_loss, False),
        "packed_varlen_ce": (attention.NAME, cycle(rand, flat), chunked_loss, False),
        "packed_static_compiled": (attention.NAME, cycle(static, fixed), chunked_loss, True),
        "packed_flex": (
            "flex_attention",
            cycle(static, lambda rs: packed(rs, width=budget)),
            chunked_loss,
            False,
        ),
        "packed_sdpa": ("sdpa", cycle(rand, flat), chunked_loss, False),
    }
    return table[name]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def real_tokens(batch: dict[str, Any]) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    # packed: everything but the filler (its labels are all ignored, first one included)
    ids = batch["input_ids"][0]
    filler = int(((batch["labels"][0] == IGNORE) & (ids == 0)).sum())
    return ids.numel() - filler


def isolation_check(
    model: Any, rows: list[torch.Tensor], attn: str, device: torch.device, max_len: int
) -> float:
    """Largest difference between a row's mean loss alone and inside a packed batch."""
    sample = rows[:4]
    diffs = []
    with (
        torch.no_grad(),
        torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"),
    ):
        batch = to_device(packed(sample, max_len=max_len), device)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        start = 0
        for r in sample:
            alone = to_device(packed([r], max_len=max_len), device)
            single = model(**{k: v for k, v in alone.items() if k != "labels"}).logits.float()
            part = logits[0, start : start + len(r)]
            diffs.append(float((part.log_softmax(-1) - single[0].log_softmax(-1)).abs().max()))
            start += len(r)
    return max(diffs)


def measure(
    name: str, shape: str, rows: list[torch.Tensor], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    max_len = args.max_len
    attn, source, loss_fn, compiled = plan(name, rows, args, max_len)
    if attn == attention.NAME:
        attention.register()
    model = build_model(shape, attn, device)
    params = sum(p.numel() for p in model.parameters())
    result: dict[str, Any] = {"strategy": name, "shape": shape, "attention": attn, "params": params}
    if name.startswith("packed"):
        result["isolation_max_logprob_diff"] = isolation_check(model, rows, attn, device, max_len)
    if compiled:
        for layer in model.model.layers:
            layer.compile(dynamic=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    model.train()
    batches = source()
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")

    def step() -> tuple[int, float]:
        batch = next(batches)
        tokens = real_tokens(batch)
        with autocast:
            loss = loss_fn(model, to_device(batch, device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return tokens, loss

    start = time.perf_counter()
    for _ in range(args.warmup_steps):
        step()
    sync(device)
    result["warmup_s"] = time.perf_counter() - start
    tokens = steps = 0
    start = time.perf_counter()
    while steps < args.max_steps and (steps < 2 or time.perf_counter() - start < args.seconds):
        n, loss = step()
        tokens += n
        steps += 1
    sync(device)
    seconds = time.perf_counter() - start
    result.update(
        steps=steps,
        seconds=seconds,
        real_tokens=tokens,
        real_tokens_per_s=tokens / seconds,
        mfu=6 * params * tokens / seconds / (args.peak_tflops * 1e12),
        last_loss=float(loss),
    )
    if device.type == "cuda":
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape and rows; CPU is fine")
    parser.add_argument("--shapes", default="1b,135m", help="the 1B target first")
    parser.add_argument("--strategies", default=",".join(ALL))
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--min-len", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--rows-per-batch", type=int, default=16)
    parser.add_argument("--tokens-per-batch", type=int, default=16384)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0, help="measured time per strategy")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--budget-s", type=float, default=290.0, help="skip what would start later")
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.smoke:
        args.shapes, args.rows, args.min_len, args.max_len = "smoke", 64, 8, 48
        args.rows_per_batch, args.tokens_per_batch, args.seconds = 4, 128, 1.0
        args.warmup_steps, args.max_steps = 1, 3
    out = args.out or Path(os.environ.get("OUT", "benchmarks/results")) / "gpu_train.json"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report: dict[str, Any] = {
        "device": card,
        "torch": torch.__version__,
        "settings": vars(args) | {"out": str(out)},
        "results": [],
    }
    import transformers

    report["transformers"] = transformers.__version__
    began = time.perf_counter()
    for shape in args.shapes.split(","):
        rows = make_rows(
            args.rows, args.min_len, args.max_len, SHAPES[shape]["vocab_size"], args.seed
        )
        for name in args.strategies.split(","):
            if time.perf_counter() - began > args.budget_s:
                report["results"].append(
                    {"strategy": name, "shape": shape, "skipped": "time budget"}
                )
                continue
            if name == "packed_flex" and device.type != "cuda":
                # PyTorch's flex attention has a forward on the CPU but no backward.
                report["results"].append(
                    {"strategy": name, "shape": shape, "skipped": "flex attention: GPU only"}
                )
                continue
            print(f"[{time.perf_counter() - began:6.0f}s] {shape} {name} ...", flush=True)
            try:
                r = measure(name, shape, rows, args, device)
            except Exception as exc:  # one strategy failing (OOM, a missing kernel) is a result
                r = {
                    "strategy": name,
                    "shape": shape,
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                }
                traceback.print_exc(limit=3)
            report["results"].append(r)
            print(
                "   ",
                {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()},
                flush=True,
            )
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['device']}, torch {report['torch']}, transformers {report['transformers']}")
    print(f"{'shape':6} {'strategy':24} {'real tok/s':>12} {'x padded':>9} {'MFU':>7} "
          f"{'isolation':>10}  note")  # fmt: skip
    base = {
        r["shape"]: r["real_tokens_per_s"]
        for r in report["results"]
        if r["strategy"] == "padded_random" and "real_tokens_per_s" in r
    }
    for r in report["results"]:
        note = r.get("error") or r.get("skipped") or ""
        tps = f"{r['real_tokens_per_s']:,.0f}" if "real_tokens_per_s" in r else "-"
        ratio = (
            f"{r['real_tokens_per_s'] / base[r['shape']]:.2f}x"
            if "real_tokens_per_s" in r and r["shape"] in base
            else "-"
        )
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        iso = r.get("isolation_max_logprob_diff")
        iso_s = f"{iso:.3g}" if iso is not None else ""
        cells = f"{tps:>12} {ratio:>9} {mfu:>7} {iso_s:>10}"
        print(f"{r['shape']:6} {r['strategy']:24} {cells}  {note[:60]}")


if __name__ == "__main__":
    main()
