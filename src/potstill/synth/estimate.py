"""`potstill synth RUN --dry-run`: the calls, tokens and cost of the synth stage, before it
runs. No model is called; answers already in the call store count as paid.

Prompt tokens are counted with `budget.tokenizer` when given (exact for a teacher that uses
that chat template), else estimated as characters / `budget.chars_per_token` plus 4 tokens
per message and 3 per request. Completion tokens are `budget.expected_completion_tokens`
per labelling reply when set, else `max_tokens` (an upper bound). A new input the teacher
will write is estimated as long as its seed, and is labelled like one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from potstill.config import RunConfig
from potstill.models import model_identity
from potstill.models.base import ChatRequest, ChatResponse, Message
from potstill.models.callstore import CallStore, request_key
from potstill.models.cost import call_cost, teacher_price
from potstill.models.tokens import heuristic_prompt_tokens, tokenizer_counter
from potstill.progress import console
from potstill.runs import RunFolder
from potstill.synth.generate import generation_calls
from potstill.synth.overlap import input_text
from potstill.synth.phases import label_plan, written_input
from potstill.tasks import Example, Task


@dataclass
class Phase:
    name: str
    calls: int = 0
    stored: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0


class _Counter:
    """Counts what the unanswered requests would send, phase by phase."""

    def __init__(self, run: RunFolder, config: RunConfig) -> None:
        self.config = config
        self.identity = model_identity(config.teacher.model)
        self.price = teacher_price(config.teacher.model)
        budget = config.budget
        self.count: Callable[[Sequence[Message]], int] = (
            tokenizer_counter(budget.tokenizer)
            if budget.tokenizer
            else lambda m: heuristic_prompt_tokens(m, budget.chars_per_token)
        )
        self.run = run

    def _stored(self, requests: list[ChatRequest]) -> list[ChatResponse | None]:
        """The stored answers; none, and no call store made, for a run that has none."""
        if not self.run.calls_db.exists():
            return [None] * len(requests)
        store = CallStore(self.run.calls_db)
        try:
            return store.get_many([request_key(self.identity, r) for r in requests])
        finally:
            store.close()

    def phase(self, name: str, requests: list[ChatRequest], completions: list[int]) -> Phase:
        stored = self._stored(requests)
        found = Phase(name, calls=len(requests), stored=sum(s is not None for s in stored))
        for request, answer, completion in zip(requests, stored, completions):
            if answer is None:
                found.prompt_tokens += self.count(request.messages)
                found.completion_tokens += completion
        found.usd = call_cost(self.price, found.prompt_tokens, found.completion_tokens)
        return found

    def answered(self, request: ChatRequest) -> str | None:
        answer = self._stored([request])[0]
        return answer.text if answer and answer.ok else None


def estimate(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    train: list[Example],
    test: list[Example],
    transfer: dict[str, list[Example]] | None = None,
) -> dict[str, Any]:
    """Calls, stored answers, tokens and dollars per phase (generate, label) and in total."""
    counter = _Counter(run, config)
    phases: list[Phase] = []
    written: list[Example] = []  # new inputs already in the store
    pending: list[Example] = []  # new inputs not written yet: stand-ins, assumed kept
    settings = config.synth.generate
    if settings is not None:
        calls = generation_calls(task, settings, train)
        lengths = [
            counter.count(
                [{"role": "user", "content": input_text(task.input_fields, c.seed.inputs)}]
            )
            for c in calls
        ]
        phases.append(counter.phase("generate", [c.request for c in calls], lengths))
        for call in calls:
            text = counter.answered(call.request)
            if text is None:  # as long as its seed, until it is written
                pending.append(Example(call.id, call.seed.inputs, None))
            elif (example := written_input(task, settings, call, text)[0]) is not None:
                written.append(example)
    plan = label_plan(task, config, train, written, test, transfer, unscreened=pending)
    screened, requests = plan.screened, plan.requests
    expected = config.budget.expected_completion_tokens
    completions = [expected or r.max_tokens for r in requests]
    phases.append(counter.phase("label", requests, completions))
    total = Phase(
        "total",
        calls=sum(p.calls for p in phases),
        stored=sum(p.stored for p in phases),
        prompt_tokens=sum(p.prompt_tokens for p in phases),
        completion_tokens=sum(p.completion_tokens for p in phases),
        usd=sum(p.usd for p in phases),
    )
    return {
        "phases": [asdict(p) for p in [*phases, total]],
        "screened_out": len(screened),
        "priced": counter.price is not None,
        "max_usd": config.budget.max_usd,
        "prompt_tokens_by": f"tokenizer {config.budget.tokenizer}"
        if config.budget.tokenizer
        else f"characters / {config.budget.chars_per_token:g} + chat overhead",
        "completion_tokens_by": f"expected {expected} per reply"
        if expected
        else "max_tokens per reply (an upper bound)",
    }


def print_estimate(found: dict[str, Any]) -> None:
    table = Table(title="synth --dry-run: what the teacher calls would cost (nothing sent)")
    for column in ("phase", "calls", "in store", "to send", "prompt tok", "completion tok", "$"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in found["phases"]:
        table.add_row(
            p["name"],
            str(p["calls"]),
            str(p["stored"]),
            str(p["calls"] - p["stored"]),
            str(p["prompt_tokens"]),
            str(p["completion_tokens"]),
            f"{p['usd']:.4f}" if found["priced"] else "no price",
        )
    console.print(table)
    console.print(
        f"prompt tokens: {found['prompt_tokens_by']}; completion tokens: "
        f"{found['completion_tokens_by']}; {found['screened_out']} input(s) screened out "
        "(contamination, duplicates) are not sent."
    )
    total, limit = found["phases"][-1]["usd"], found["max_usd"]
    if limit is not None:
        verdict = "fits" if total <= limit else "exceeds; the stage would stop when it is spent"
        console.print(f"budget.max_usd ${limit:g}: the estimate ${total:.4f} {verdict}.")
