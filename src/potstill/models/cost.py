"""What model calls cost: prices, running totals, and a hard budget.

Prices live on a model's config (`price_per_million_input` / `price_per_million_output`, US
dollars per million tokens); the synth stage's bill and budget and the evaluation's cost per
1,000 requests all price tokens through `price_of` and `call_cost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from potstill.config import ModelConfig
from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.ledger import SpendLedger
from potstill.models.tokens import worst_case_prompt_tokens


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


def teacher_price(model: ModelConfig) -> Price | None:
    """What the synth stage's teacher calls cost: in `mode: batch` the batch prices when both
    are set (else the online ones, an upper bound); online, `price_of`."""
    batch = model.batch
    if model.mode == "batch" and None not in (
        batch.price_per_million_input,
        batch.price_per_million_output,
    ):
        assert batch.price_per_million_input is not None
        assert batch.price_per_million_output is not None
        return Price(batch.price_per_million_input, batch.price_per_million_output)
    return price_of(model)


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


# Failures the endpoint answers without producing a reply (a rate limit, a refusal, a
# server error status): not billed. A timeout, a dropped connection or a broken reply may
# have been produced, and billed, all the same.
# A batch's lines that it never ran (it expired, was cancelled or failed) are not billed.
UNBILLED_FAILURES = ("rate_limited", "quota", "not_sent", "http_", "batch_")


@dataclass
class Budget:
    """A hard cap on spending: a call is sent only if its worst case still fits.

    Each call reserves its worst case (prompt tokens bounded by the UTF-8 bytes of its
    messages, plus `max_tokens` of completion) before it is sent, so calls in flight count
    and cannot together overshoot the cap; the reservation becomes the real cost when the
    answer comes. With a `ledger` the reservations are committed to the run's calls.sqlite
    first, so what was spent, calls in flight included, carries over to the next run.
    """

    max_usd: float | None
    price: Price | None
    ledger: SpendLedger | None = None
    spent: float = 0.0
    _reserved: dict[int, tuple[int | None, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ledger is not None:
            self.spent = self.ledger.spent()

    def worst_case(self, request: ChatRequest) -> float:
        prompt = worst_case_prompt_tokens(request.messages)
        return call_cost(self.price, prompt, request.max_tokens)

    def admit(self, index: int, request: ChatRequest, key: str) -> str | None:
        """None (and the call's worst case reserved) when it fits, else why it does not."""
        if self.max_usd is None:
            return None
        cost = self.worst_case(request)
        reserved = sum(c for _, c in self._reserved.values())
        if self.spent + reserved + cost > self.max_usd:
            return f"not sent: budget.max_usd ${self.max_usd:g} reached (spent ${self.spent:.4f})"
        entry = self.ledger.reserve(key, cost) if self.ledger is not None else None
        self._reserved[index] = (entry, cost)
        return None

    def settle(self, index: int, response: ChatResponse, key: str, fresh: bool) -> None:
        """Count an answer: a sent call at its real cost (its worst case when the endpoint
        reported no usage, or failed in a way it may have billed); a stored answer only if
        the ledger does not count it yet (it was sent before the run had a budget), and then
        into the ledger too."""
        entry, worst = self._reserved.pop(index, (None, 0.0))
        held = response.error_kind == "not_sent"  # refused here: it answers no earlier send
        if entry is None and fresh and not held and self.ledger is not None:
            # Sent by an earlier process, answered now (a batch it submitted, re-attached):
            # its reservation, counted in `spent` at its worst case, becomes the real cost.
            # A call this run held back leaves that reservation counted: the killed run's
            # call may have been answered, and billed, after it died.
            adopted = self.ledger.unsettled(key)
            if adopted is not None:
                entry, worst = adopted
                self.spent -= worst
        if not fresh:
            if not response.ok or (self.ledger is not None and self.ledger.holds(key)):
                return
            stored = call_cost(self.price, response.prompt_tokens, response.completion_tokens)
            self.spent += stored
            if self.ledger is not None:
                self.ledger.record(key, stored)
            return
        if response.ok:
            used = response.prompt_tokens + response.completion_tokens
            real = call_cost(self.price, response.prompt_tokens, response.completion_tokens)
            cost = real if used else worst
        else:
            unbilled = (response.error_kind or "").startswith(UNBILLED_FAILURES)
            cost = 0.0 if unbilled else worst
        self.spent += cost
        if entry is not None and self.ledger is not None:
            self.ledger.settle(entry, cost)
