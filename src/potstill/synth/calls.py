"""The synth stage's teacher calls: through the call store, under the budget, on a meter.

With `budget.max_usd` set, every call's worst case is committed to the spending ledger in
calls.sqlite before it is sent (`models/ledger.py`), so the budget holds across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from potstill.config import RunConfig
from potstill.models import ChatModel, build_model, chunk_size
from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.callstore import CallStore, answer_all, request_key
from potstill.models.cost import Budget, Price, Spend, teacher_price
from potstill.models.ledger import SpendLedger
from potstill.progress import call_meter
from potstill.runs import RunFolder


def teacher_model(run: RunFolder, config: RunConfig) -> ChatModel:
    """The synth stage's teacher: online, or through the endpoint's Batch API
    (`teacher.model.mode: batch`, its batches recorded in synth/batches.json)."""
    if config.teacher.model.mode == "batch":
        from potstill.models.batch import BatchChatModel

        return BatchChatModel(config.teacher.model, run.synth_dir / "batches.json")
    return build_model(config.teacher.model, log_dir=run.root / "engines")


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
    # synth.logprobs: k, the tokenizer's vocab digest, rows per way they were matched.
    logprob_counts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, run: RunFolder, config: RunConfig) -> TeacherCalls:
        price = teacher_price(config.teacher.model)
        model = teacher_model(run, config)
        store = CallStore(run.calls_db)
        max_usd = config.budget.max_usd
        ledger = SpendLedger(run.calls_db) if max_usd is not None else None
        return cls(
            model,
            store,
            chunk_size(config.teacher.model),
            price,
            Budget(max_usd, price, ledger),
        )

    def close(self) -> None:
        self.store.close()
        if self.budget.ledger is not None:
            self.budget.ledger.close()

    def answer(self, label: str, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answers in request order; failed and held-back calls come back with `error`."""
        keys = [request_key(self.model.identity, r) for r in requests]
        stored = sum(r is not None for r in self.store.get_many(keys))
        with call_meter(label, len(requests), cached=stored) as meter:

            def on_answer(i: int, response: ChatResponse, fresh: bool) -> None:
                cost = self.total.add(response, self.price) if response.ok else 0.0
                self.budget.settle(i, response, keys[i], fresh)
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
                admit=lambda i: self.budget.admit(i, requests[i], keys[i]),
                on_answer=on_answer,
            )
