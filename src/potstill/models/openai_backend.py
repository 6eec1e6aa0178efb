"""The `openai` backend: any OpenAI-compatible endpoint (vLLM, Ollama, OpenAI, Azure, ...)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

from potstill.models.base import ChatRequest, ChatResponse


class MissingKeyError(ValueError):
    """The config names an API-key variable that is not set."""


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def endpoint_identity(base_url: str | None, model: str) -> str:
    """The call-store identity of an endpoint model."""
    return f"openai:{base_url or 'default'}:{model}"


class OpenAIChatModel:
    """`openai.AsyncOpenAI` with bounded concurrency.

    Retries are the SDK's own: exponential backoff with jitter on 408/409/429/5xx and
    connection errors, honouring `Retry-After` (and `retry-after-ms`) when the server sends it.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        from openai import AsyncOpenAI

        key: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise MissingKeyError(
                    f"the config names api_key_env={api_key_env!r}, but that environment "
                    "variable is not set"
                )
        self._key = key
        self.model = model
        self.base_url = base_url
        # Local servers (vLLM, Ollama, potstill serve) ignore the key; the SDK wants one anyway.
        self._timeout = timeout_s
        self._max_retries = max_retries
        self._client_type = AsyncOpenAI
        self._max_concurrency = max_concurrency

    @property
    def identity(self) -> str:
        return endpoint_identity(self.base_url, self.model)

    async def _one(self, client: object, sem: asyncio.Semaphore, req: ChatRequest) -> ChatResponse:
        from openai import OpenAIError

        async with sem:
            start = time.perf_counter()
            try:
                completion = await client.chat.completions.create(  # type: ignore[attr-defined]
                    model=self.model,
                    messages=req.messages,
                    max_tokens=req.max_tokens,
                    temperature=req.temperature,
                    seed=req.sample_index,
                )
            except OpenAIError as exc:
                return ChatResponse(
                    text=None,
                    finish_reason="error",
                    latency_s=time.perf_counter() - start,
                    error=redact(f"{type(exc).__name__}: {exc}", self._key),
                )
            latency = time.perf_counter() - start
        if not completion.choices:
            return ChatResponse(
                text=None,
                finish_reason="error",
                latency_s=latency,
                error="the endpoint returned no choices",
            )
        choice = completion.choices[0]
        usage = completion.usage
        return ChatResponse(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=latency,
        )

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        sem = asyncio.Semaphore(self._max_concurrency)
        client_args = {
            "api_key": self._key or "not-needed",
            "base_url": self.base_url,
            "timeout": self._timeout,
            "max_retries": self._max_retries,
        }
        async with self._client_type(**client_args) as client:  # type: ignore[arg-type]
            return list(await asyncio.gather(*(self._one(client, sem, r) for r in requests)))
