"""Open conversation: a reply to a user turn, after optional earlier turns; reference optional."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from potstill.config import PromptConfig, TaskConfig
from potstill.models.base import Message
from potstill.tasks.base import Example, Metric, Parsed
from potstill.tasks.embedding import similarity
from potstill.tasks.prompts import Prompts, TemplatedTask, default_user_template
from potstill.tasks.text_metrics import open_text_scores

ROLES = ("user", "assistant")
# Chat-template control tokens: a reply that holds one has run past its own turn.
_CONTROL = re.compile(
    r"<\|(?:im_start|im_end|eot_id|endoftext|start_header_id|end_header_id|user|assistant)\|>"
    r"|</s>|\[/?INST\]"
)


def parse_history(text: str) -> list[Message]:
    """Earlier turns from JSON: a list of {"role", "content"} objects, or of plain strings that
    alternate user / assistant. Raises ValueError saying what is wrong."""
    if not text.strip():
        return []
    try:
        turns = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON list of turns ({exc.msg})") from None
    if not isinstance(turns, list):
        raise ValueError("must be a JSON list of turns")
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        if isinstance(turn, str):
            turn = {"role": ROLES[i % 2], "content": turn}
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            raise ValueError(f"turn {i + 1} needs a role (user or assistant) and content")
        if not isinstance(turn.get("content"), str):
            raise ValueError(f"turn {i + 1} needs text content")
        messages.append({"role": turn["role"], "content": turn["content"]})
    if messages and messages[-1]["role"] != "assistant":
        raise ValueError("the last earlier turn must be the assistant's")
    return messages


class ConversationTask(TemplatedTask):
    kind = "conversation"
    input_fields: tuple[str, ...] = ("message",)
    optional_fields: tuple[str, ...] = ("history",)
    input_defaults: ClassVar[Mapping[str, str]] = {"history": ""}
    reference_match = False
    metrics: tuple[Metric, ...] = (
        Metric("embedding_similarity"),
        Metric("length", higher_is_better=False, needs_reference=False),
    )

    def __init__(self, config: TaskConfig) -> None:
        self.description = config.description or "You are a helpful assistant."
        self.prompts = Prompts(
            config.templates,
            default_user=default_user_template(self.input_fields),
            variables=(*self.input_fields, *self.optional_fields),
            default_system="{{ description }}",
        )

    def messages(self, inputs: dict[str, str], prompt: PromptConfig) -> list[Message]:
        messages = super().messages(inputs, prompt)
        history = parse_history(inputs.get("history", ""))
        return [*messages[:-1], *history, messages[-1]]

    def reply_text(self, answer: str, reason: str | None, style: str) -> str:
        return answer

    def parse(self, reply: str, style: str, inputs: Mapping[str, str] | None = None) -> Parsed:
        text = reply.strip()
        if not re.search(r"\w", text):
            return Parsed("no_answer", detail="empty reply")
        if _CONTROL.search(text):
            return Parsed("malformed", raw_answer=text, detail="the reply runs past its turn")
        return Parsed("ok", text, None, text)

    def parse_flexible(
        self, reply: str, style: str, inputs: Mapping[str, str] | None = None
    ) -> Parsed:
        strict = self.parse(reply, style, inputs)
        if strict.status != "malformed":
            return strict
        head = _CONTROL.split(reply.strip(), maxsplit=1)[0].strip()
        if not re.search(r"\w", head):
            return strict
        return Parsed("ok", head, None, reply.strip(), detail="flexible")

    def check_inputs(self, inputs: Mapping[str, str]) -> tuple[str, str] | None:
        try:
            parse_history(inputs.get("history", ""))
        except ValueError as exc:
            return "history", str(exc)
        return None

    def check_reference(
        self, reference: str, inputs: Mapping[str, str] | None = None
    ) -> str | None:
        return None if reference.strip() else "the reference reply is empty"

    def score(self, parsed: Parsed, reference: str) -> float:
        """The headline metric: embedding similarity to the reference (0 if unusable)."""
        if not parsed.ok or not parsed.answer:
            return 0.0
        return similarity([parsed.answer], [reference])[0]

    def example_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> list[dict[str, float]]:
        return open_text_scores(parsed, examples, rouge_scores=False, density=False)
