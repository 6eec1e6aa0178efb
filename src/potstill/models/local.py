"""The `local` backend: a transformers model in this process, batched with left padding."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.packaged import resolve_local_ref


def _fingerprint(path: str) -> str:
    """Identify the weights, so a retrained model never reuses another's cached calls."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path}@{digest.hexdigest()[:12]}"


class LocalChatModel:
    """Generates with `model.generate`; requests are sorted by length to waste less padding."""

    def __init__(self, ref: str, batch_size: int = 8) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.ref = ref
        self.path = resolve_local_ref(ref)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        self.model.eval()
        self._identity = f"local:{_fingerprint(self.path)}"
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    def _stop_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        stop = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        return stop

    def _generate_batch(self, batch: Sequence[ChatRequest]) -> list[ChatResponse]:
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(
                r.messages, tokenize=False, add_generation_prompt=True
            )
            for r in batch
        ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        first = batch[0]
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.max_tokens for r in batch),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self._stop_ids()),
        }
        if first.temperature > 0:
            torch.manual_seed(first.sample_index)
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        start = time.perf_counter()
        with self._lock, torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        latency = time.perf_counter() - start
        return self._decode(batch, enc, out, latency)

    def _decode(
        self, batch: Sequence[ChatRequest], enc: Any, out: Any, latency: float
    ) -> list[ChatResponse]:
        stop = self._stop_ids()
        width = enc["input_ids"].shape[1]
        responses = []
        for row, req, mask in zip(out[:, width:].tolist(), batch, enc["attention_mask"]):
            tokens: list[int] = []
            finish = "length"
            for tok in row[: req.max_tokens]:
                if tok in stop:
                    finish = "stop"
                    break
                tokens.append(tok)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            responses.append(
                ChatResponse(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(tokens) + (finish == "stop"),
                    latency_s=latency / len(batch),
                )
            )
        return responses

    def generate_sync(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        order = sorted(
            range(len(requests)),
            key=lambda i: (
                requests[i].temperature,
                requests[i].sample_index,
                sum(len(m["content"]) for m in requests[i].messages),
            ),
        )
        results: list[ChatResponse | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            group = [requests[i] for i in idx]
            # One sampling setting per batch: split where temperature or sample differ.
            if len({(r.temperature, r.sample_index) for r in group}) > 1:
                answers = [self._generate_batch([r])[0] for r in group]
            else:
                answers = self._generate_batch(group)
            for i, answer in zip(idx, answers):
                results[i] = answer
        return [r for r in results if r is not None]

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return await asyncio.to_thread(self.generate_sync, requests)
