"""Answers through the call store, loading a model only when some call is not stored yet."""

from __future__ import annotations

from collections.abc import Sequence

from potstill.config import ModelConfig
from potstill.models import ChatModel, ChatResponse, build_model, chunk_size, model_identity
from potstill.models.base import ChatRequest
from potstill.models.callstore import CallStore, answer_all, request_key
from potstill.models.packaged import release_memory
from potstill.progress import progress_bar
from potstill.runs import RunFolder


def answer_cached(
    run: RunFolder,
    model: ModelConfig,
    requests: Sequence[ChatRequest],
    label: str,
    ref: str | None = None,
    loaded: dict[str, ChatModel] | None = None,
) -> list[ChatResponse]:
    """Answer `requests` in order. Identical requests are asked once; stored answers are
    read back, and the model is built only if some request has no stored answer, so adding
    a candidate or a judged example costs only the new calls. A caller that asks the same
    model again passes `loaded`, which keeps the built model for the next call."""
    identity = model_identity(model, ref)
    keys = [request_key(identity, r) for r in requests]
    first: dict[str, ChatRequest] = {}
    for key, request in zip(keys, requests):
        first.setdefault(key, request)
    unique = list(first)
    store = CallStore(run.calls_db)
    try:
        stored = {key: store.get(key) for key in unique}
        missing = [key for key, answer in stored.items() if answer is None]
        if missing:
            keep = loaded if loaded is not None else {}
            if identity not in keep:
                keep[identity] = build_model(model, ref, run.root / "engines")
            chat_model = keep[identity]
            if chat_model.identity != identity:
                raise RuntimeError(
                    f"model identity changed: expected {identity}, got {chat_model.identity}"
                )
            with progress_bar(label, len(missing)) as advance:
                fresh = answer_all(
                    chat_model, store, [first[k] for k in missing], chunk_size(model), advance
                )
            stored.update(zip(missing, fresh))
            if loaded is None:
                del chat_model, keep
                release_memory()
    finally:
        store.close()
    return [_known(stored[key]) for key in keys]


def _known(answer: ChatResponse | None) -> ChatResponse:
    if answer is None:  # answer_all returns one answer per request; this cannot happen
        raise RuntimeError("a request was left without an answer")
    return answer
