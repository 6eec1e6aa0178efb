"""Prompt tokens of a chat request: estimated from characters, or counted by a tokenizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from potstill.models.base import Message

# OpenAI's rule of thumb for chat formatting: a few tokens per message and per reply.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3


def heuristic_prompt_tokens(messages: Sequence[Message], chars_per_token: float = 4.0) -> int:
    """Prompt tokens estimated from characters (about 4 per token for English with BPE)."""
    return TOKENS_PER_REQUEST + sum(
        TOKENS_PER_MESSAGE + math.ceil(len(m["content"]) / chars_per_token) for m in messages
    )


# Chat-format tokens a template may add around the text: the role, turn markers, a default
# system header (Llama 3's names a date and a knowledge cut-off): more than templates add.
WORST_TOKENS_PER_MESSAGE = 16
WORST_TOKENS_PER_REQUEST = 64


def worst_case_prompt_tokens(messages: Sequence[Message]) -> int:
    """An upper bound on a request's prompt tokens, for the budget: no tokenizer makes more
    tokens of a text than it has UTF-8 bytes (byte-level BPE; SentencePiece falls back to
    bytes), so no text, in any script, is undercounted; plus the chat format's overhead."""
    return WORST_TOKENS_PER_REQUEST + sum(
        WORST_TOKENS_PER_MESSAGE + len(m.get("role", "").encode()) + len(m["content"].encode())
        for m in messages
    )


# Stand-ins for message content while the chat template is rendered alone: private-use
# characters, which no template markup or special token contains.
_MARK = "\ue000potstill-content-{}\ue001"


def special_token_texts(tokenizer: Any) -> list[str]:
    """The texts a tokenizer turns into its special tokens (`<|im_start|>`, `</s>`...)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = {token.content for token in added.values() if getattr(token, "special", False)}
    texts |= set(getattr(tokenizer, "all_special_tokens", []) or [])
    return sorted(t for t in texts if t)


def chat_token_ids(
    tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of `messages` in the tokenizer's chat template, where only the template's
    own markup becomes special tokens: a `<|im_end|>` written inside a message's content (a
    dataset cell, a served request) is tokenized as the plain text it is, so it cannot end a
    turn or start one.

    Content without any special token's text is rendered and tokenized whole, as
    `apply_chat_template` (and TRL, in training) does. Other content is tokenized on its
    own, with special tokens split, between the template's pieces; the template's pieces
    are found by rendering it with stand-ins for the content."""
    messages = list(messages)
    specials = special_token_texts(tokenizer)
    if not any(text in m["content"] for m in messages for text in specials):
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    marks = [_MARK.format(i) for i in range(len(messages))]
    skeleton = tokenizer.apply_chat_template(
        [{**m, "content": mark} for m, mark in zip(messages, marks)],
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    ids: list[int] = []
    for mark, message in zip(marks, messages):
        markup, found, skeleton = skeleton.partition(mark)
        if not found or mark in skeleton:
            raise ValueError(
                "the tokenizer's chat template does not insert each message's content once, "
                "as written, so content that holds special-token text cannot be kept as text"
            )
        ids += tokenizer(markup, add_special_tokens=False)["input_ids"]
        content = tokenizer(message["content"], add_special_tokens=False, split_special_tokens=True)
        ids += content["input_ids"]
    return ids + list(tokenizer(skeleton, add_special_tokens=False)["input_ids"])


def prompt_completion_ids(
    tokenizer: Any, prompt: Sequence[Message], completion: Sequence[Message]
) -> tuple[list[int], list[int]]:
    """A training row's token ids and completion mask (1 on the reply's ids), built as TRL
    builds them for a conversational prompt-completion row (the reply starts where the
    prompt's ids, generation prompt included, and the whole row's ids first differ), with
    content kept as text (`chat_token_ids`)."""
    prompt_ids = chat_token_ids(tokenizer, prompt, add_generation_prompt=True)
    ids = chat_token_ids(tokenizer, [*prompt, *completion], add_generation_prompt=False)
    start = 0
    while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
        start += 1
    return ids, [0] * start + [1] * (len(ids) - start)


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
