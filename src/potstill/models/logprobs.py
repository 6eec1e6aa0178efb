"""A teacher's token distributions: the top-K logprobs at every token of a reply.

Two sources give them: an OpenAI-compatible endpoint through the chat completion's
`logprobs.content[*].top_logprobs` (tokens as text), and a local model from its own logits by
teacher forcing (`teacher_forced_topk`: tokens as ids). `TopLogprobs` holds either; it travels
in the call store inside a `ChatResponse` as `encode`'s compact form (floats as base64 float32,
not JSON numbers), so a stored call keeps its distributions as it keeps its text.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from potstill.models.base import Message
from potstill.models.tokens import prompt_completion_ids

Token = str | int


@dataclass
class TopLogprobs:
    """Per reply position: the token chosen, the K most likely tokens and their logprobs
    (a position with fewer than K is padded with logprob -inf)."""

    tokens: list[Token]
    top_tokens: list[list[Token]]
    top_logprobs: np.ndarray  # (positions, K) float32

    @property
    def k(self) -> int:
        return int(self.top_logprobs.shape[1]) if self.top_logprobs.ndim == 2 else 0


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(text: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape).copy()


def encode(found: TopLogprobs) -> dict[str, Any]:
    """The compact JSON form kept in the call store."""
    n, k = len(found.tokens), found.k
    as_ids = all(isinstance(t, int) for t in found.tokens)
    out: dict[str, Any] = {"n": n, "k": k, "lp": _b64(found.top_logprobs.astype(np.float32))}
    if as_ids:
        out["ids"] = _b64(np.asarray(found.tokens, dtype=np.int32))
        out["top_ids"] = _b64(np.asarray(found.top_tokens, dtype=np.int32).reshape(n, k))
    else:
        out["tokens"] = [str(t) for t in found.tokens]
        out["top"] = [[str(t) for t in row] for row in found.top_tokens]
    return out


def decode(data: dict[str, Any]) -> TopLogprobs:
    n, k = int(data["n"]), int(data["k"])
    lps = _unb64(data["lp"], np.float32, (n, k))
    if "ids" in data:
        ids: list[Token] = _unb64(data["ids"], np.int32, (n,)).tolist()
        top: list[list[Token]] = _unb64(data["top_ids"], np.int32, (n, k)).tolist()
        return TopLogprobs(ids, top, lps)
    return TopLogprobs(list(data["tokens"]), [list(row) for row in data["top"]], lps)


def from_openai_choice(choice: dict[str, Any]) -> TopLogprobs | None:
    """The `logprobs` of one chat-completion choice (OpenAI shape), or None when it has none.
    Raises TypeError / ValueError / KeyError on a field of the wrong shape."""
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    k = max(len(entry.get("top_logprobs") or []) for entry in content)
    if k == 0:
        return None
    tokens: list[Token] = []
    top_tokens: list[list[Token]] = []
    lps = np.full((len(content), k), -np.inf, dtype=np.float32)
    for i, entry in enumerate(content):
        tokens.append(str(entry["token"]))
        row: list[Token] = []
        for j, alt in enumerate((entry.get("top_logprobs") or [])[:k]):
            row.append(str(alt["token"]))
            lps[i, j] = float(alt["logprob"])
        top_tokens.append(row + [""] * (k - len(row)))
    return TopLogprobs(tokens, top_tokens, lps)


def teacher_forced_topk(
    model: Any, tokenizer: Any, prompt: Sequence[Message], reply: str, k: int
) -> TopLogprobs:
    """A local model's own top-K logprobs at every token of `reply` after `prompt`, as it
    would be trained on it (the chat template's assistant turn, end-of-turn tokens included):
    one forward pass, the distribution at position t-1 being the one over token t."""
    import torch

    completion = [{"role": "assistant", "content": reply}]
    ids, mask = prompt_completion_ids(tokenizer, list(prompt), completion)
    start = mask.index(1) if 1 in mask else len(ids)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
        logprobs = torch.log_softmax(logits[start - 1 : len(ids) - 1].float(), dim=-1)
        values, indices = logprobs.topk(k, dim=-1)
    tokens: list[Token] = list(ids[start:])
    return TopLogprobs(tokens, indices.cpu().tolist(), values.cpu().numpy())
