"""The synth stage's teacher calls: through the call store, under the budget, on a meter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from potstill.config import RunConfig
from potstill.models import ChatModel, build_model, chunk_size
from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.callstore import CallStore, answer_all, request_key
from potstill.models.cost import Budget, Price, Spend, price_of
from potstill.progress import call_meter
from potstill.runs import RunFolder


@dataclass
class TeacherCalls:
    model: ChatModel
    store: CallStore
    chunk: int
    price: Price | None
    budget: Budget
    total: Spend = field(default_factory=Spend)  # every answer behind the output, stored too
    sent: Spend = field(default_factory=Spend)  # answers paid for in this run
    failed: int = 0

    @classmethod
    def open(cls, run: RunFolder, config: RunConfig) -> TeacherCalls:
        price = price_of(config.teacher.model)
        budget = Budget(config.budget.max_usd, price, config.budget.chars_per_token)
        return cls(
            build_model(config.teacher.model),
            CallStore(run.calls_db),
            chunk_size(config.teacher.model),
            price,
            budget,
        )

    def close(self) -> None:
        self.store.close()

    def answer(self, label: str, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answers in request order; failed and held-back calls come back with `error`."""
        keys = [request_key(self.model.identity, r) for r in requests]
        stored = sum(r is not None for r in self.store.get_many(keys))
        with call_meter(label, len(requests), cached=stored) as meter:

            def on_answer(i: int, response: ChatResponse, fresh: bool) -> None:
                cost = self.total.add(response, self.price) if response.ok else 0.0
                self.budget.settle(i, cost)
                if fresh:
                    if response.ok:
                        self.sent.add(response, self.price)
                    else:
                        self.failed += 1
                    meter.answered(response.ok, cost)

            return answer_all(
                self.model,
                self.store,
                requests,
                self.chunk,
                admit=lambda i: self.budget.admit(i, requests[i]),
                on_answer=on_answer,
            )
