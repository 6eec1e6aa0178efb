"""The Task protocol: how an example becomes messages, and how a reply is parsed and scored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from potstill.config import PromptConfig
from potstill.models.base import ChatRequest, Message

Status = Literal["ok", "no_answer", "malformed"]


@dataclass(frozen=True)
class Example:
    """One task input with a stable id and an optional reference answer."""

    id: str
    inputs: dict[str, str]
    reference: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "inputs": self.inputs, "reference": self.reference}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Example:
        return cls(id=str(data["id"]), inputs=dict(data["inputs"]), reference=data.get("reference"))


@dataclass(frozen=True)
class Parsed:
    """A parsed reply: never a guess. `answer` is the normalized answer, `rationale` apart."""

    status: Status
    answer: str | None = None
    rationale: str | None = None
    # The answer as the model wrote it (e.g. the expression "22 - 9" before the calculator).
    raw_answer: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Task(Protocol):
    """A task kind. Implementations are plain classes built from a `TaskConfig`."""

    kind: str
    input_fields: tuple[str, ...]

    def messages(self, inputs: dict[str, str], prompt: PromptConfig) -> list[Message]:
        """The chat messages that ask a model for this input in the prompt's style."""
        ...

    def parse(self, reply: str, style: str) -> Parsed:
        """Parse a reply into ok / no_answer / malformed, answer and rationale kept apart."""
        ...

    def parse_flexible(self, reply: str, style: str) -> Parsed:
        """A looser reading for the report only: the strict parse, else an answer found
        anywhere in the reply. Never used to build training data."""
        ...

    def check_reference(self, reference: str) -> str | None:
        """None when a reference is usable, else why not (e.g. not a number)."""
        ...

    def score(self, parsed: Parsed, reference: str) -> float:
        """1.0 when a parsed answer matches the reference, else 0.0."""
        ...

    def reply_text(self, answer: str, reason: str | None, style: str) -> str:
        """A reply in the given style: what a worked example or a training target looks like."""
        ...


def render_reply(answer: str, reason: str | None, style: str) -> str:
    """The reply format shared by the kinds: bare answer, or JSON for chain-of-thought."""
    if style == "cot":
        body: dict[str, str] = {}
        if reason is not None:
            body["reason"] = reason
        body["answer"] = answer
        return json.dumps(body, ensure_ascii=False)
    if reason is not None:
        return json.dumps({"reason": reason, "answer": answer}, ensure_ascii=False)
    return answer


def build_messages(system: str, user: str, prompt: PromptConfig, task: Task) -> list[Message]:
    """System instruction, worked examples as earlier turns, then the real input."""
    messages: list[Message] = [{"role": "system", "content": system}]
    for shot in prompt.shots:
        messages.append({"role": "user", "content": task_user_text(task, shot.inputs)})
        messages.append(
            {
                "role": "assistant",
                "content": task.reply_text(shot.answer, shot.reason, prompt.style),
            }
        )
    messages.append({"role": "user", "content": user})
    return messages


def task_user_text(task: Task, inputs: dict[str, str]) -> str:
    missing = [f for f in task.input_fields if f not in inputs]
    if missing:
        raise KeyError(f"input is missing field(s) {missing}")
    if len(task.input_fields) == 1:
        return inputs[task.input_fields[0]]
    return "\n".join(f"{f.capitalize()}: {inputs[f]}" for f in task.input_fields)


def chat_requests(task: Task, prompt: PromptConfig, examples: list[Example]) -> list[ChatRequest]:
    """One request per example, asked the way `prompt` says."""
    return [
        ChatRequest(task.messages(e.inputs, prompt), prompt.max_tokens, prompt.temperature)
        for e in examples
    ]
