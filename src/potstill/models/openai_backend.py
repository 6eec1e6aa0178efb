"""The `openai` backend: any OpenAI-compatible endpoint (vLLM, Ollama, OpenAI, Azure, ...)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from potstill.errors import UserError
from potstill.models.base import Admit, ChatRequest, ChatResponse
from potstill.models.limits import RateLimiter, RetryPolicy, parse_retry_after
from potstill.models.tokens import heuristic_prompt_tokens


class MissingKeyError(UserError, ValueError):
    """The config names an API-key variable that is not set."""


class EndpointRefused(UserError, RuntimeError):
    """The endpoint refused the key, the quota is spent, or it does not know the model:
    no retry can help, so the stage stops at once (answers already stored are kept)."""


def endpoint_identity(base_url: str | None, model: str) -> str:
    """An endpoint model's call-store identity."""
    return f"openai:{base_url or 'default'}:{model}"


def redact(text: str, secret: str | None) -> str:
    """The one rule for the configured key: every text the endpoint sends back (an error's
    message, a reply's content) passes through here before potstill keeps or shows it."""
    return text.replace(secret, "***") if secret else text


# Quota and billing errors arrive as 429 too, but waiting does not fix them.
QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}


class BadReply(Exception):
    """A 200 reply that is not a chat completion (not JSON, or no choices)."""


@dataclass(frozen=True)
class Failure:
    """One failed request, classified."""

    kind: str  # timeout | connection | rate_limited | http_<status> | bad_response
    message: str
    retryable: bool
    fatal: bool = False
    retry_after: float | None = None


def classify(exc: Exception) -> Failure:
    """Sort an SDK error into retry (429, 408, 409, 5xx, timeouts, resets), stop the stage
    (401, 403, 404, spent quota) or fail this call only (other 4xx, errors the SDK cannot
    read). A 200 that is not a chat completion (`BadReply`) is retried."""
    import openai

    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BadReply):  # a server or proxy hiccup; the next try may be whole
        return Failure("bad_response", str(exc), retryable=True)
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", message, retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return Failure("connection", message, retryable=True)
    if not isinstance(exc, openai.APIStatusError):
        return Failure("bad_response", message, retryable=False)
    status = exc.status_code
    retry_after = parse_retry_after(exc.response.headers)
    codes = {str(exc.code), str(getattr(exc, "type", None))}
    if status == 429 and codes & QUOTA_CODES:
        return Failure("quota", message, retryable=False, fatal=True)
    if status in (401, 403, 404):
        return Failure(f"http_{status}", message, retryable=False, fatal=True)
    if status == 429:
        return Failure("rate_limited", message, retryable=True, retry_after=retry_after)
    if status in (408, 409) or status >= 500:
        return Failure(f"http_{status}", message, retryable=True, retry_after=retry_after)
    return Failure(f"http_{status}", message, retryable=False)


def read_reply(data: Any, secret: str | None, latency_s: float) -> ChatResponse:
    """A 200 reply as a ChatResponse, with the key redacted from every text taken from it (a
    misbehaving proxy may echo it: what is kept, in the call store, synth and eval files, the
    card and the report, is built from these texts). BadReply when it is no chat completion,
    its quote redacted before it is cut short, so no part of the key survives the cut."""
    if not isinstance(data, dict):  # e.g. a proxy's HTML page with status 200
        shown = redact(str(data), secret)[:80]
        raise BadReply(f"the endpoint's reply is not a JSON object: {shown!r}")
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise BadReply("the endpoint returned no choices")
    choice = choices[0]
    try:
        usage = data.get("usage") or {}
        text = (choice.get("message") or {}).get("content") or ""
        return ChatResponse(
            text=redact(str(text), secret),
            finish_reason=redact(str(choice.get("finish_reason") or "stop"), secret),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency_s,
            logprobs=reply_logprobs(choice, secret),
        )
    except (AttributeError, TypeError, ValueError, KeyError):  # the error would quote the field
        raise BadReply("the endpoint's reply has a field of the wrong type") from None


def chat_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """A chat request's body: what the online backend posts and what a batch input line
    carries (`models/batch.request_line`), so both ask for the same answer."""
    body: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": request.sample_index,
    }
    if request.logprobs:  # synth.logprobs: the teacher's top-K at every token of its reply
        body.update(logprobs=True, top_logprobs=request.logprobs)
    return body


def reply_logprobs(choice: dict[str, Any], secret: str | None) -> dict[str, Any] | None:
    """A choice's top-K logprobs in the call store's compact form, or None when it has none.
    Tokens are endpoint text too: when the key shows in them, joined, they are dropped (the
    reply's text is redacted; its pieces could not be)."""
    from potstill.models.logprobs import encode, from_openai_choice

    found = from_openai_choice(choice)
    if found is None:
        return None
    if secret and secret in "".join(map(str, found.tokens)) + repr(found.top_tokens):
        return None
    return encode(found)


class OpenAIChatModel:
    """`openai.AsyncOpenAI` with potstill's own manners: bounded concurrency, optional
    requests- and tokens-per-minute limits, retries with full jitter that honour
    `Retry-After` (one 429 pauses every request, not just its own), attempts and total
    time capped. The SDK's own retries are off, so these are the only ones."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        retry_max_wait_s: float = 60.0,
        retry_total_s: float = 600.0,
    ) -> None:
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
        self._timeout = timeout_s
        self._max_concurrency = max_concurrency
        self._rpm, self._tpm = requests_per_minute, tokens_per_minute
        self.policy = RetryPolicy(
            attempts=max_retries + 1, max_wait_s=retry_max_wait_s, total_s=retry_total_s
        )
        self._rng = random.Random()

    @property
    def identity(self) -> str:
        return endpoint_identity(self.base_url, self.model)

    async def _attempt(self, client: Any, req: ChatRequest) -> ChatResponse:
        # The SDK's documented request for any endpoint (`client.post`): the same transport,
        # errors and timeouts as `chat.completions.create`, without walking the parameters
        # through its TypedDict transform or building pydantic models of the reply, which
        # cost more client CPU per request than the rest of the stage together.
        start = time.perf_counter()
        body = chat_body(self.model, req)
        data = await client.post("/chat/completions", cast_to=object, body=body)
        return read_reply(data, self._key, time.perf_counter() - start)

    async def _call(self, client: Any, req: ChatRequest, limiter: RateLimiter) -> ChatResponse:
        """One call with retries; raises EndpointRefused when no retry can help."""
        from openai import OpenAIError

        tokens = heuristic_prompt_tokens(req.messages) + req.max_tokens
        first = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            await limiter.acquire(tokens)
            try:
                response = await self._attempt(client, req)
            except (OpenAIError, BadReply) as exc:
                failure = classify(exc)
            else:
                response.attempts = attempt
                return response
            message = redact(failure.message, self._key)
            if failure.fatal:
                raise EndpointRefused(
                    f"the endpoint {self.base_url or 'default'} refused model "
                    f"{self.model!r} ({failure.kind}); stopping, no retry can help: {message}"
                )
            if failure.kind == "rate_limited" and failure.retry_after is not None:
                limiter.pause(min(failure.retry_after, self.policy.total_s))
            delay = self.policy.delay(attempt, failure.retry_after, self._rng)
            elapsed = time.monotonic() - first
            if (
                not failure.retryable
                or attempt >= self.policy.attempts
                or elapsed + delay > self.policy.total_s
            ):
                return ChatResponse(
                    text=None,
                    finish_reason="error",
                    latency_s=elapsed,
                    error=f"{failure.kind} after {attempt} attempt(s) in {elapsed:.1f}s: {message}",
                    error_kind=failure.kind,
                    attempts=attempt,
                )
            await asyncio.sleep(delay)

    async def _worker(
        self,
        client: Any,
        requests: Sequence[ChatRequest],
        order: Iterator[int],
        admit: Admit | None,
        limiter: RateLimiter,
        out: asyncio.Queue[tuple[int, ChatResponse] | BaseException],
    ) -> None:
        try:
            for i in order:  # shared by all workers: each takes the next index
                reason = admit(i) if admit else None
                if reason is not None:
                    held = ChatResponse(None, "error", error=reason, error_kind="not_sent")
                    out.put_nowait((i, held))
                else:
                    out.put_nowait((i, await self._call(client, requests[i], limiter)))
                # The consumer takes (and a budget settles) that answer before this worker
                # asks `admit` about the next request, so the check sees its real cost.
                await asyncio.sleep(0)
        except Exception as exc:  # EndpointRefused, or a bug: the consumer raises it
            out.put_nowait(exc)

    def _client(self) -> Any:
        from openai import AsyncOpenAI

        # Local servers (vLLM, Ollama, potstill serve) ignore the key; the SDK wants one anyway.
        return AsyncOpenAI(
            api_key=self._key or "not-needed",
            base_url=self.base_url,
            timeout=self._timeout,
            max_retries=0,
        )

    async def stream(
        self, requests: Sequence[ChatRequest], admit: Admit | None = None
    ) -> AsyncGenerator[tuple[int, ChatResponse], None]:
        """Answer with at most max_concurrency requests in flight; yield each as it comes."""
        if not requests:
            return
        limiter = RateLimiter(self._rpm, self._tpm)
        out: asyncio.Queue[tuple[int, ChatResponse] | BaseException] = asyncio.Queue()
        order = iter(range(len(requests)))
        async with self._client() as client:
            workers = [
                asyncio.create_task(self._worker(client, requests, order, admit, limiter, out))
                for _ in range(min(self._max_concurrency, len(requests)))
            ]
            try:
                for _ in range(len(requests)):
                    item = await out.get()
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        results: list[ChatResponse | None] = [None] * len(requests)
        async for i, response in self.stream(requests):
            results[i] = response
        return [r for r in results if r is not None]
