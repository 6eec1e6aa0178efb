"""What model calls cost: prices, running totals, and a hard budget.

Prices live on a model's config (`price_per_million_input` / `price_per_million_output`, US
dollars per million tokens); the synth stage's bill and budget and the evaluation's cost per
1,000 requests all price tokens through `price_of` and `call_cost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from potstill.config import ModelConfig
from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.tokens import heuristic_prompt_tokens


@dataclass(frozen=True)
class Price:
    """What a model costs, in US dollars per million tokens."""

    input_per_1m: float
    output_per_1m: float


def price_of(model: ModelConfig) -> Price | None:
    """The model's price from its config; None unless both prices are set."""
    if model.price_per_million_input is None or model.price_per_million_output is None:
        return None
    return Price(model.price_per_million_input, model.price_per_million_output)


def call_cost(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    """US dollars for one call; 0 when the model has no price (a local model)."""
    if price is None:
        return 0.0
    return (prompt_tokens * price.input_per_1m + completion_tokens * price.output_per_1m) / 1e6


@dataclass
class Spend:
    """Running totals of a set of calls."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    def add(self, response: ChatResponse, price: Price | None) -> float:
        cost = call_cost(price, response.prompt_tokens, response.completion_tokens)
        self.calls += 1
        self.prompt_tokens += response.prompt_tokens
        self.completion_tokens += response.completion_tokens
        self.usd += cost
        return cost

    def to_json(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "usd": round(self.usd, 6),
        }


@dataclass
class Budget:
    """A hard cap on spending: a call starts only if its worst case still fits.

    Each call in flight reserves its estimated prompt cost plus `max_tokens` of completion,
    so concurrent calls cannot together overshoot the cap; the reservation is replaced by
    the real cost when the answer comes.
    """

    max_usd: float | None
    price: Price | None
    chars_per_token: float = 4.0
    spent: float = 0.0
    _reserved: dict[int, float] = field(default_factory=dict)

    def worst_case(self, request: ChatRequest) -> float:
        prompt = heuristic_prompt_tokens(request.messages, self.chars_per_token)
        return call_cost(self.price, prompt, request.max_tokens)

    def admit(self, key: int, request: ChatRequest) -> str | None:
        """None (and the call's worst case reserved) when it fits, else why it does not."""
        if self.max_usd is None:
            return None
        cost = self.worst_case(request)
        if self.spent + sum(self._reserved.values()) + cost > self.max_usd:
            return f"not sent: budget.max_usd ${self.max_usd:g} reached (spent ${self.spent:.4f})"
        self._reserved[key] = cost
        return None

    def settle(self, key: int, cost: float) -> None:
        """Record a finished call's real cost (an answer from the store counts too)."""
        self._reserved.pop(key, None)
        self.spent += cost
