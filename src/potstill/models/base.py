"""The ChatModel protocol: anything that answers a batch of chat requests."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]
# Asked before the request at this index is first sent: None sends it, a reason holds it back.
Admit = Callable[[int], str | None]


@dataclass(frozen=True)
class ChatRequest:
    messages: list[Message]
    max_tokens: int = 64
    temperature: float = 0.0
    # Several samples of one prompt differ only by this index (and so by their store key).
    sample_index: int = 0
    # Top-K token logprobs asked of an endpoint with the reply (synth.logprobs); 0: none.
    logprobs: int = 0

    def sampling(self) -> dict[str, Any]:
        found: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.logprobs:  # only then: the keys of calls without logprobs stay as they were
            found["logprobs"] = self.logprobs
        return found


@dataclass
class ChatResponse:
    """One answer. `error` is set (and `text` is None) when the call failed."""

    text: str | None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    # What kind of failure (timeout, connection, http_500, not_sent, ...) when `error` is set.
    error_kind: str | None = None
    # Requests sent for this answer: 1, plus one per retry.
    attempts: int = 1
    # The reply's tokens with their top-K logprobs (`models/logprobs.encode`), when asked for.
    logprobs: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChatResponse:
        # Keys this version does not know (a store written by another version) are ignored.
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@runtime_checkable
class ChatModel(Protocol):
    """A chat model. `identity` names the exact model (and weights) for the call store."""

    @property
    def identity(self) -> str: ...

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answer every request, in order; failures come back as responses with `error`."""
        ...


@runtime_checkable
class StreamingChatModel(ChatModel, Protocol):
    """A chat model that answers requests concurrently and hands each over as it arrives,
    so the caller can store it at once (an endpoint: a crash loses only calls in flight)."""

    def stream(
        self, requests: Sequence[ChatRequest], admit: Admit | None = None
    ) -> AsyncGenerator[tuple[int, ChatResponse], None]:
        """Yield (index, response) for every request, in the order answers arrive."""
        ...
