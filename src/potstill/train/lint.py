"""Check, before any step is taken, that the loss will fall on the reply and only the reply.

Training with a loss mask that is empty (nothing learnt, the loss still looks fine), that
covers the prompt, that leaves out the end-of-turn token (the student never learns to stop) or
a chat template that silently drops the rationale wastes a whole run; each is caught here on a
few rendered rows, with a message that says what is wrong and on which row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from potstill.errors import UserError
from potstill.models.tokens import chat_token_ids

IGNORE = -100


class TrainingDataError(UserError, ValueError):
    """Training rows that would not teach what they should; the message names the row."""


def end_of_turn_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Token ids that end a reply: the generation config's eos ids, else the tokenizer's."""
    found: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    for value in eos if isinstance(eos, list | tuple) else [eos]:
        if value is not None:
            found.add(int(value))
    return found


def _prompt_ids(tokenizer: Any, prompt: list[dict[str, str]]) -> list[int]:
    return [int(t) for t in chat_token_ids(tokenizer, prompt, add_generation_prompt=True)]


def lint_row(
    tokenizer: Any,
    row: dict[str, Any],
    input_ids: Sequence[int],
    labels: Sequence[int],
    end_ids: set[int],
) -> str | None:
    """What is wrong with one tokenized training row, or None."""
    where = f"row {row.get('id', '?')}"
    trained = [i for i, label in enumerate(labels) if label != IGNORE]
    if not trained:
        return f"{where}: the loss mask is empty, so the row teaches nothing"
    prompt_len = len(_prompt_ids(tokenizer, row["prompt"]))
    if trained[0] < prompt_len:
        n = sum(1 for i in trained if i < prompt_len)
        return (
            f"{where}: the loss mask covers {n} prompt token(s); the loss must fall on the "
            "assistant reply only"
        )
    reply_ids = [int(input_ids[i]) for i in trained]
    if not end_ids & set(reply_ids):
        names = sorted(tokenizer.convert_ids_to_tokens(sorted(end_ids)))
        return (
            f"{where}: the trained reply lacks the end-of-turn token {names}, so the student "
            "would never learn to stop"
        )
    trained_text = tokenizer.decode(reply_ids)
    rationale = row.get("rationale")
    if rationale and json.dumps(rationale, ensure_ascii=False)[1:-1] not in trained_text:
        return f"{where}: the chat template drops the rationale from the trained reply"
    content = row["completion"][-1]["content"].strip()
    if content not in trained_text:
        return (
            f"{where}: the trained reply differs from the row's completion "
            f"({trained_text[:80]!r} vs {content[:80]!r}); the chat template rewrites it"
        )
    return None


def lint_dataset(
    tokenizer: Any, prepared: Any, end_ids: set[int], sample: int = 8
) -> list[dict[str, Any]]:
    """Check the first `sample` rows of a tokenized dataset (input_ids, labels, prompt,
    completion, optional rationale); raise TrainingDataError naming every problem found.
    Returns the checked rows' summaries (id, tokens, trained tokens)."""
    problems: list[str] = []
    checked: list[dict[str, Any]] = []
    rows = [prepared[i] for i in _sample_indices(prepared, sample)]
    for row in rows:
        problem = lint_row(tokenizer, row, row["input_ids"], row["labels"], end_ids)
        if problem:
            problems.append(problem)
        trained = sum(1 for label in row["labels"] if label != IGNORE)
        checked.append({"id": row.get("id"), "tokens": len(row["input_ids"]), "trained": trained})
    if problems:
        raise TrainingDataError("training data lint failed:\n  " + "\n  ".join(problems))
    return checked


def _sample_indices(prepared: Any, sample: int) -> list[int]:
    """The first rows, plus the row with the longest rationale when it is not among them."""
    n = len(prepared)
    picked = list(range(min(sample, n)))
    if "rationale" in getattr(prepared, "column_names", []):
        lengths = [len(r or "") for r in prepared["rationale"]]
        if lengths and max(lengths) > 0:
            longest = max(range(n), key=lengths.__getitem__)
            if longest not in picked:
                picked.append(longest)
    return picked
