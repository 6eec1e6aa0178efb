"""Prompt tokens of a chat request: estimated from characters, or counted by a tokenizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from potstill.models.base import Message

# OpenAI's rule of thumb for chat formatting: a few tokens per message and per reply.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3


def heuristic_prompt_tokens(messages: Sequence[Message], chars_per_token: float = 4.0) -> int:
    """Prompt tokens estimated from characters (about 4 per token for English with BPE)."""
    return TOKENS_PER_REQUEST + sum(
        TOKENS_PER_MESSAGE + math.ceil(len(m["content"]) / chars_per_token) for m in messages
    )


def tokenizer_counter(ref: str) -> Callable[[Sequence[Message]], int]:
    """Prompt tokens counted exactly with a tokenizer's chat template (needs transformers)."""
    from transformers import AutoTokenizer

    from potstill.models.packaged import resolve_local_ref

    # A folder may hold only tokenizer files; packaged:NAME and hub ids resolve as models do.
    path = ref if Path(ref).expanduser().is_dir() else resolve_local_ref(ref)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(path).expanduser()))

    def count(messages: Sequence[Message]) -> int:
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        if hasattr(ids, "keys"):  # a BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return len(ids)

    return count
