"""The synth stage's phases, as the stage runs them and the dry run (`estimate.py`) counts
them: which generated replies become inputs, which inputs are screened out before any call,
and the label requests for the rest. One definition, so the estimate cannot drift from
what the stage sends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from potstill.config import GenerateConfig, RunConfig
from potstill.models.base import ChatRequest
from potstill.synth.filters import screen_inputs
from potstill.synth.generate import GenerationCall, parse_generated
from potstill.tasks import Example, Task
from potstill.tasks.base import chat_requests


def sample_requests(task: Task, config: RunConfig, examples: list[Example]) -> list[ChatRequest]:
    """`synth.samples` teacher requests per example, grouped by example; sample 0 is the
    request a single-sample run makes, so its stored answers stay valid."""
    n = config.synth.samples
    # An endpoint sends its top-K logprobs with the reply; a local teacher is scored after.
    k = config.synth.logprobs if config.teacher.model.backend == "openai" else None
    return [
        replace(request, sample_index=s, logprobs=k or 0)
        for request in chat_requests(task, config.teacher.prompt, examples)
        for s in range(n)
    ]


def written_input(
    task: Task, settings: GenerateConfig, call: GenerationCall, text: str
) -> tuple[Example | None, str | None]:
    """The new input a generate reply wrote, or None and why it wrote none."""
    inputs, why = parse_generated(task, settings, text)
    return (Example(call.id, inputs, None) if inputs is not None else None), why


@dataclass(frozen=True)
class LabelPlan:
    """The label phase: inputs screened out (id -> reason, detail), the inputs to label in
    order, and their `synth.samples` requests each, grouped by input."""

    screened: dict[str, tuple[str, str]]
    inputs: list[Example]
    requests: list[ChatRequest]


def label_plan(
    task: Task,
    config: RunConfig,
    train: list[Example],
    generated: list[Example],
    test: list[Example],
    transfer: dict[str, list[Example]] | None,
    unscreened: Sequence[Example] = (),
) -> LabelPlan:
    """Screen the training and generated inputs (`filters.screen_inputs`: no call for one
    that overlaps evaluation or repeats another), then the requests for the rest, in order.
    `unscreened`: inputs labelled without screening (the dry run's stand-ins for new inputs
    the teacher has not written yet)."""
    screened = screen_inputs(task, config.synth, train, generated, test, transfer)
    inputs = [e for e in [*train, *generated] if e.id not in screened] + list(unscreened)
    return LabelPlan(screened, inputs, sample_requests(task, config, inputs))
