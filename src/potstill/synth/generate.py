"""Synthetic inputs (self-instruct): the teacher writes new task inputs from seed examples."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from potstill.config import GenerateConfig
from potstill.models.base import ChatRequest
from potstill.synth.overlap import input_text
from potstill.tasks import Example, Task

DEFAULT_TEMPLATE = (
    "You write new inputs for a task; a model will be trained on them. The task: "
    "{description}\n\nExamples of inputs:\n\n{examples}\n\nWrite one new input, {variation}. "
    "It must be a new input of the same kind, not a copy of an example, and must not contain "
    "its answer. Reply with JSON only: {format}"
)
_OPENING_BRACE = re.compile(r"\{")


@dataclass(frozen=True)
class GenerationCall:
    """One request for a new input: the seed it grows from and its number for that seed."""

    seed: Example
    index: int
    request: ChatRequest

    @property
    def id(self) -> str:
        return f"{self.seed.id}~gen{self.index}"


def _describe(task: Task) -> str:
    description = getattr(task, "description", None)
    return str(description) if description else f"a {task.kind} task"


def _render(task: Task, inputs: dict[str, str]) -> str:
    return json.dumps({f: inputs[f] for f in task.input_fields}, ensure_ascii=False)


def generation_calls(
    task: Task, config: GenerateConfig, train: list[Example]
) -> list[GenerationCall]:
    """`per_seed` requests for each of the first `seeds` training examples. Each request
    shows the seed and the examples after it, and asks for the next variation in turn."""
    if not train:
        return []
    seeds = train[: config.seeds] if config.seeds else train
    template = config.template or DEFAULT_TEMPLATE
    slot = json.dumps({f: f"<the new {f}>" for f in task.input_fields})
    calls = []
    for position, seed in enumerate(seeds):
        count = min(config.examples_per_prompt, len(train))
        shown = [train[(position + k) % len(train)] for k in range(count)]
        examples = "\n".join(_render(task, e.inputs) for e in shown)
        for index in range(config.per_seed):
            variation = config.variations[
                (position * config.per_seed + index) % len(config.variations)
            ]
            text = template.format(
                description=_describe(task), examples=examples, variation=variation, format=slot
            )
            request = ChatRequest(
                [{"role": "user", "content": text}],
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                sample_index=index,
            )
            calls.append(GenerationCall(seed, index, request))
    return calls


def _json_object(reply: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for match in _OPENING_BRACE.finditer(reply):
        try:
            found, _ = decoder.raw_decode(reply, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict):
            return found
    return None


def parse_generated(
    task: Task, config: GenerateConfig, reply: str
) -> tuple[dict[str, str] | None, str | None]:
    """The new input's fields, or None and why not (`unparsable_input`, `input_length`)."""
    found = _json_object(reply)
    if found is None:
        return None, "unparsable_input"
    inputs = {f: found.get(f) for f in task.input_fields}
    if not all(isinstance(v, str) and v.strip() for v in inputs.values()):
        return None, "unparsable_input"
    clean = {f: str(v).strip() for f, v in inputs.items()}
    length = len(input_text(task.input_fields, clean))
    if not config.min_chars <= length <= config.max_chars:
        return None, "input_length"
    return clean, None
