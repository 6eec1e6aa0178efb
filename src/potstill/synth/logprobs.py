"""The teacher's token distributions for the training rows (synth.logprobs: K).

For every accepted row, the teacher's top-K logprobs at each token of the row's completion,
as the student's tokenizer and chat template cut it (end-of-turn tokens included). The row's
completion is often not the teacher's raw reply (`target: answer` keeps the answer of a
chain-of-thought reply), so each row is matched one of three ways, counted in the card:

- `aligned`: the completion's tokens (without its end-of-turn) are a contiguous run of the
  reply's tokens; the teacher's distributions there are taken, conditioned on its own prompt
  and its own reply before them (its reasoning included). The end-of-turn tokens take the
  reply's own where the run ends the reply, else they have none (cross-entropy there).
- `rescored` (local teacher only): no such run; the completion is scored as the teacher's
  reply to its own prompt, one forward pass, every token with a distribution.
- `unaligned` (endpoint teacher): no run, and an endpoint scores no text it did not write;
  the row trains with cross-entropy alone.

A local teacher's distributions come from teacher forcing on its own logits
(`models/logprobs.teacher_forced_topk`); an endpoint's from the `top_logprobs` it sent with its
reply, its token texts mapped to ids with the students' tokenizer. Scoring calls go through
the call store like any call (keyed by prompt, reply text and K), committed chunk by chunk, so
a killed stage redoes only what it had not stored. `synth/logprobs.npz` holds them compactly:
ids as int32, logprobs as float32, one flat array for all rows with offsets.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from potstill.errors import damaged
from potstill.files import atomic_write_bytes
from potstill.models.base import ChatRequest, ChatResponse, Message
from potstill.models.callstore import CallStore, request_key
from potstill.models.logprobs import TopLogprobs, decode, encode, teacher_forced_topk
from potstill.models.tokens import prompt_completion_ids
from potstill.progress import progress_bar
from potstill.runs import StageFailed

FILE = "logprobs.npz"
ALIGNED, RESCORED, UNALIGNED = "aligned", "rescored", "unaligned"


class NoLogprobs(StageFailed):
    """synth.logprobs is set but the teacher endpoint sent none: a config problem (exit 2)."""


def vocab_digest(tokenizer: Any) -> str:
    """Identifies a vocabulary: two tokenizers with the same digest give tokens the same ids."""
    items = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class RowDistributions:
    """One row's completion token ids and, per token, the teacher's top-K (has=0: none)."""

    tokens: np.ndarray  # (n,) int32
    top_ids: np.ndarray  # (n, K) int32
    top_logprobs: np.ndarray  # (n, K) float32
    has: np.ndarray  # (n,) uint8


@dataclass
class TeacherDistributions:
    k: int
    vocab: str  # vocab_digest of the tokenizer the ids belong to
    rows: dict[str, RowDistributions]
    counts: dict[str, int]


def completion_ids(
    tokenizer: Any, prompt: Sequence[Message], completion: Sequence[Message]
) -> list[int]:
    """The ids a row's loss covers, as train/stage.py tokenizes it."""
    ids, mask = prompt_completion_ids(tokenizer, list(prompt), list(completion))
    return [i for i, m in zip(ids, mask) if m]


def find_run(needle: Sequence[int], haystack: Sequence[int]) -> int | None:
    """Where `needle` first occurs as a contiguous run of `haystack` (the last match wins
    ties on nothing: the first is taken), or None."""
    n = len(needle)
    if n == 0:
        return None
    for start in range(len(haystack) - n + 1):
        if list(haystack[start : start + n]) == list(needle):
            return start
    return None


def trailing_template_tokens(tokenizer: Any, ids: Sequence[int]) -> int:
    """How many of a completion's last ids are the chat template's end of turn (special
    tokens and the whitespace after them), not the reply's content."""
    special = set(tokenizer.all_special_ids)
    n = 0
    while n < len(ids) and (
        ids[-1 - n] in special or tokenizer.decode([ids[-1 - n]]).strip() == ""
    ):
        n += 1
    return n


def align(completion: Sequence[int], reply: Sequence[int], tail: int) -> list[int] | None:
    """For each completion token, the reply position whose distribution it takes (-1: none),
    or None when the completion's content (all but its last `tail` template tokens) is no
    contiguous run of the reply's tokens."""
    whole = find_run(completion, reply)
    if whole is not None:
        return list(range(whole, whole + len(completion)))
    body = list(completion[: len(completion) - tail])
    start = find_run(body, reply)
    if start is None:
        return None
    return list(range(start, start + len(body))) + [-1] * tail


def _pick(
    found: TopLogprobs, tokens: Sequence[int], positions: Sequence[int], k: int
) -> RowDistributions:
    """The row's distributions: completion token j takes reply position positions[j]."""
    n = len(positions)
    ids = np.zeros((n, k), dtype=np.int32)
    lps = np.full((n, k), -np.inf, dtype=np.float32)
    has = np.zeros(n, dtype=np.uint8)
    for j, p in enumerate(positions):
        if p < 0 or p >= len(found.top_tokens):
            continue
        row = found.top_tokens[p]
        width = min(k, len(row))
        ids[j, :width] = np.asarray(row[:width], dtype=np.int64)
        lps[j, :width] = found.top_logprobs[p, :width]
        has[j] = 1
    return RowDistributions(np.asarray(tokens, dtype=np.int32), ids, lps, has)


def map_token_texts(found: TopLogprobs, tokenizer: Any) -> TopLogprobs | None:
    """An endpoint's token texts as ids of `tokenizer` (vLLM's `token_id:N` form, or the text
    a single token decodes to); None when a chosen token maps to no id. Alternatives that map
    to no id, or to an id already listed, are dropped (their mass joins the rest bucket)."""
    table = _decode_table(tokenizer)

    def to_id(token: Any) -> int | None:
        text = str(token)
        if text.startswith("token_id:") and text[9:].isdigit():
            return int(text[9:])
        return table.get(text)

    tokens: list[str | int] = []
    top: list[list[str | int]] = []
    lps = np.full_like(found.top_logprobs, -np.inf)
    for i, chosen in enumerate(found.tokens):
        tid = to_id(chosen)
        if tid is None:
            return None
        tokens.append(tid)
        row: list[str | int] = []
        for j, alt in enumerate(found.top_tokens[i]):
            aid = to_id(alt) if alt != "" else None
            if aid is not None and aid not in row:
                lps[i, len(row)] = found.top_logprobs[i, j]
                row.append(aid)
        top.append(row + [0] * (found.k - len(row)))
    return TopLogprobs(tokens, top, lps)


_TABLES: dict[int, dict[str, int]] = {}


def _decode_table(tokenizer: Any) -> dict[str, int]:
    """Decoded text -> id for every token whose text no other token shares."""
    key = id(tokenizer)
    if key not in _TABLES:
        seen: Counter[str] = Counter()
        table: dict[str, int] = {}
        for tid in range(len(tokenizer)):
            text = tokenizer.decode([tid])
            seen[text] += 1
            table[text] = tid
        _TABLES[key] = {t: i for t, i in table.items() if seen[t] == 1 and "\ufffd" not in t}
    return _TABLES[key]


def score_request(prompt: Sequence[Message], reply: str, k: int) -> ChatRequest:
    """The call-store request of a teacher-forced scoring call (never sent to an endpoint)."""
    messages = [*prompt, {"role": "assistant", "content": reply}]
    return ChatRequest(messages, max_tokens=0, temperature=0.0, sample_index=-1, logprobs=k)


def score_local(
    model: Any,
    tokenizer: Any,
    identity: str,
    store: CallStore,
    jobs: list[tuple[list[Message], str]],
    k: int,
    chunk: int = 16,
) -> list[TopLogprobs]:
    """Teacher-forced top-K for each (teacher prompt, reply), through the call store: stored
    ones are read, the rest computed and committed chunk by chunk."""
    requests = [score_request(p, r, k) for p, r in jobs]
    keys = [request_key(identity, q) for q in requests]
    stored = store.get_many(keys)
    out: list[TopLogprobs | None] = [
        decode(s.logprobs) if s is not None and s.logprobs else None for s in stored
    ]
    missing = [i for i, found in enumerate(out) if found is None]
    label = "synth: teacher logprobs"
    with progress_bar(label, len(jobs), cached=len(jobs) - len(missing)) as advance:
        for begin in range(0, len(missing), chunk):
            batch = []
            for i in missing[begin : begin + chunk]:
                prompt, reply = jobs[i]
                found = teacher_forced_topk(model, tokenizer, prompt, reply, k)
                out[i] = found
                answer = ChatResponse(text=reply, logprobs=encode(found))
                batch.append((keys[i], identity, requests[i], answer))
            store.put_many(batch)
            advance(len(batch))
    return [found for found in out if found is not None]


def write(path: Path, dists: TeacherDistributions) -> None:
    """synth/logprobs.npz, whole or not at all."""
    ids = list(dists.rows)
    rows = [dists.rows[i] for i in ids]
    k = dists.k
    lengths = [len(r.tokens) for r in rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def flat(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        parts = [getattr(r, name) for r in rows]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype=dtype)

    meta = {"k": k, "vocab": dists.vocab, "counts": dists.counts}
    buffer = io.BytesIO()
    np.savez(
        buffer,
        row_ids=np.asarray(ids, dtype=np.str_),
        offsets=offsets,
        tokens=flat("tokens", (0,), np.int32),
        top_ids=flat("top_ids", (0, k), np.int32),
        top_logprobs=flat("top_logprobs", (0, k), np.float32),
        has=flat("has", (0,), np.uint8),
        meta=np.asarray(json.dumps(meta)),
    )
    atomic_write_bytes(path, buffer.getvalue())


def read(path: Path) -> TeacherDistributions:
    """The distributions synth wrote; DamagedRunFile when the file cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            offsets = data["offsets"]
            arrays = {n: data[n] for n in ("tokens", "top_ids", "top_logprobs", "has")}
            ids = [str(i) for i in data["row_ids"]]
    except (OSError, ValueError, KeyError) as exc:
        raise damaged(path, f"teacher distributions that cannot be read ({exc})") from None
    rows = {}
    for n, row_id in enumerate(ids):
        a, b = int(offsets[n]), int(offsets[n + 1])
        rows[row_id] = RowDistributions(*(arrays[x][a:b] for x in arrays))
    return TeacherDistributions(int(meta["k"]), str(meta["vocab"]), rows, dict(meta["counts"]))


def require_logprobs(responses: Sequence[ChatResponse], k: int, where: str) -> None:
    """Stop (exit 2) when the endpoint's first answer carries no logprobs: asked before the
    rest of the calls are sent, so the budget is not spent on replies without them."""
    answered = next((r for r in responses if r.ok), None)
    if answered is not None and not answered.logprobs:
        raise NoLogprobs(
            f"synth.logprobs: {k} asks the teacher for its top-{k} token logprobs, but the "
            f"endpoint {where} returned none (no `logprobs.content[].top_logprobs` in its "
            "chat completion). Use an endpoint that returns them (vLLM, an OpenAI model that "
            "offers logprobs) or unset synth.logprobs."
        )


@dataclass
class Kept:
    """An accepted training row with what the teacher was asked and answered for it."""

    row: dict[str, Any]
    teacher_prompt: list[Message]
    reply: ChatResponse


def _local(kept: list[Kept], model: Any, store: CallStore, k: int) -> TeacherDistributions:
    tokenizer = model.tokenizer
    counts: Counter[str] = Counter()
    plans: list[tuple[str, list[int], list[int] | None, str]] = []
    jobs: list[tuple[list[Message], str]] = []
    for item in kept:
        row, reply = item.row, item.reply.text or ""
        ids = completion_ids(tokenizer, row["prompt"], row["completion"])
        reply_ids = completion_ids(tokenizer, item.teacher_prompt, [_assistant(reply)])
        positions = align(ids, reply_ids, trailing_template_tokens(tokenizer, ids))
        text, how = reply, ALIGNED
        if positions is None:
            text, how = row["completion"][0]["content"], RESCORED
            rescored = completion_ids(tokenizer, item.teacher_prompt, row["completion"])
            positions = list(range(len(ids))) if rescored == ids else None
        plans.append((how if positions is not None else UNALIGNED, ids, positions, row["id"]))
        jobs.append((item.teacher_prompt, text))
    scored = score_local(model.model, tokenizer, model.identity, store, jobs, k)
    rows = {}
    for (how, ids, positions, row_id), found in zip(plans, scored):
        counts[how] += 1
        rows[row_id] = _pick(found, ids, positions or [-1] * len(ids), k)
    return TeacherDistributions(k, vocab_digest(tokenizer), rows, dict(counts))


def _endpoint(kept: list[Kept], tokenizer: Any, k: int) -> TeacherDistributions:
    counts: Counter[str] = Counter()
    rows = {}
    for item in kept:
        row = item.row
        ids = completion_ids(tokenizer, row["prompt"], row["completion"])
        raw = item.reply.logprobs
        found = map_token_texts(decode(raw), tokenizer) if raw else None
        positions = None
        if found is not None:
            reply_ids = [int(t) for t in found.tokens]
            positions = align(ids, reply_ids, trailing_template_tokens(tokenizer, ids))
        if found is None or positions is None:
            counts[UNALIGNED] += 1
            empty = TopLogprobs([], [], np.zeros((0, k), dtype=np.float32))
            rows[row["id"]] = _pick(empty, ids, [-1] * len(ids), k)
        else:
            counts[ALIGNED] += 1
            rows[row["id"]] = _pick(found, ids, positions, k)
    return TeacherDistributions(k, vocab_digest(tokenizer), rows, dict(counts))


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def teacher_distributions(
    kept: list[Kept], model: Any, store: CallStore, k: int, student_tokenizer: Any = None
) -> TeacherDistributions:
    """Every kept row's distributions: a local teacher (a model with `.model` and
    `.tokenizer`) scores by teacher forcing; an endpoint's own logprobs are mapped into
    `student_tokenizer`'s ids."""
    if hasattr(model, "tokenizer") and hasattr(model, "model"):
        return _local(kept, model, store, k)
    return _endpoint(kept, student_tokenizer, k)
