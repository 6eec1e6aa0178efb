"""Chat models: the protocol, its backends and the call store."""

from __future__ import annotations

from pathlib import Path

from potstill.config import ModelConfig
from potstill.models.base import ChatModel, ChatRequest, ChatResponse, Message

__all__ = [
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "Message",
    "build_model",
    "chunk_size",
    "model_identity",
]


def chunk_size(config: ModelConfig) -> int:
    """How many calls a local model is given between commits to the call store: a few
    batches' worth (an endpoint's answers are committed as they arrive)."""
    return 4 * (config.batch_size if config.backend == "local" else config.max_concurrency)


def build_model(
    config: ModelConfig, ref: str | None = None, log_dir: Path | None = None
) -> ChatModel:
    """Make the chat model a config describes; `ref` replaces its model (a trained student).
    A local model whose engine is a server (`models/engines.py`) logs to `log_dir`."""
    if config.backend == "openai":
        from potstill.models.openai_backend import OpenAIChatModel

        return OpenAIChatModel(
            model=ref or config.model,
            base_url=config.base_url,
            api_key_env=config.api_key_env,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            retry_max_wait_s=config.retry_max_wait_s,
            retry_total_s=config.retry_total_s,
        )
    from potstill.models.engines import LaunchedChatModel, resolve_engine

    if resolve_engine(config) != "transformers":
        return LaunchedChatModel(config, ref, log_dir or Path.cwd() / "engines")
    from potstill.models.local import LocalChatModel

    return LocalChatModel(ref or config.model, batch_size=config.batch_size)


def model_identity(config: ModelConfig, ref: str | None = None) -> str:
    """What `build_model(config, ref).identity` will be, without loading any weights."""
    if config.backend == "openai":
        from potstill.models.openai_backend import endpoint_identity

        return endpoint_identity(config.base_url, ref or config.model)
    from potstill.models.engines import resolve_engine
    from potstill.models.local import local_identity

    engine = resolve_engine(config)
    identity = local_identity(ref or config.model)
    # Another engine answers differently: its calls are stored apart.
    return identity if engine == "transformers" else f"{engine}:{identity}"
