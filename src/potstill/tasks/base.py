"""The Task protocol: how an example becomes messages, and how a reply is parsed and scored."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from potstill.config import PromptConfig, Shot
from potstill.models.base import ChatRequest, Message
from potstill.tasks.replies import ReplyParts

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


@dataclass(frozen=True)
class Metric:
    """A ground-truth metric a task reports, one number per candidate with an interval."""

    name: str
    higher_is_better: bool = True
    # A corpus metric (macro-F1) is computed over a whole set of examples, not averaged per
    # example; its interval comes from recomputing it on resampled examples.
    corpus: bool = False
    # Reference-free metrics (length, entity density) are measured on every usable reply.
    needs_reference: bool = True


class Task(Protocol):
    """A task kind. Implementations are plain classes built from a `TaskConfig`."""

    kind: str
    input_fields: tuple[str, ...]
    # Inputs an example may have but need not (a conversation's earlier turns).
    optional_fields: tuple[str, ...]
    # True when a reply is right or wrong against the reference (labels, letters, numbers);
    # False for open text (summaries, conversation), compared by similarity metrics instead.
    reference_match: bool
    # Every ground-truth metric of the kind; the first is the headline, a per-example metric.
    metrics: tuple[Metric, ...]

    def messages(self, inputs: dict[str, str], prompt: PromptConfig) -> list[Message]:
        """The chat messages that ask a model for this input in the prompt's style."""
        ...

    def user_text(self, inputs: Mapping[str, str], style: str) -> str:
        """The user turn for one input (worked examples are rendered the same way)."""
        ...

    def parse(self, reply: str, style: str, inputs: Mapping[str, str] | None = None) -> Parsed:
        """Parse a reply into ok / no_answer / malformed, answer and rationale kept apart.
        `inputs` lets a kind read answers that refer to the input (an option's text)."""
        ...

    def parse_flexible(
        self, reply: str, style: str, inputs: Mapping[str, str] | None = None
    ) -> Parsed:
        """A looser reading for the report only: the strict parse, else an answer found
        anywhere in the reply. Never used to build training data."""
        ...

    def check_inputs(self, inputs: Mapping[str, str]) -> tuple[str, str] | None:
        """None when an example's inputs are usable, else (field, why not)."""
        ...

    def check_reference(
        self, reference: str, inputs: Mapping[str, str] | None = None
    ) -> str | None:
        """None when a reference is usable, else why not (e.g. not a number)."""
        ...

    def canonical_reference(self, reference: str, inputs: Mapping[str, str]) -> str:
        """The reference in the form `score` compares against (a label's own spelling, an
        option's letter); called once when the dataset is loaded, after `check_reference`."""
        ...

    def score(self, parsed: Parsed, reference: str) -> float:
        """1.0 when a parsed answer matches the reference, else 0.0 (reference_match kinds);
        for open text, the headline similarity in [0, 1]."""
        ...

    def reply_text(self, answer: str, reason: str | None, style: str) -> str:
        """A reply in the given style: what a worked example or a training target looks like."""
        ...

    def target_answer(self, parsed: Parsed) -> str:
        """The answer a student learns to write for an accepted reply: the task's canonical
        form of a label, letter or number (never the synonym or spelling the teacher used);
        open text as the teacher wrote it."""
        ...

    def example_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> list[dict[str, float]]:
        """Per example, the value of each non-corpus metric that applies to it (metrics that
        need a reference are left out for an example without one)."""
        ...

    def corpus_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> dict[str, float]:
        """The corpus metrics over these examples (all of which have a reference)."""
        ...

    def details(self, parsed: Sequence[Parsed], examples: Sequence[Example]) -> dict[str, Any]:
        """Non-scalar results for the report, e.g. {"confusion": {...}}; may be empty."""
        ...


def stated_answer(reply: str, parts: ReplyParts, kinds: tuple[type, ...] = (str,)) -> str | Parsed:
    """The answer a reply of a kind with discrete answers states (labels, letters): its JSON
    object's `answer`, when of one of `kinds`, else the whole reply; or the Parsed that says
    why it states none (JSON that does not parse, two different answers, no answer field, an
    empty reply)."""
    if parts.json_error:
        return Parsed("malformed", detail=parts.json_error)
    if parts.conflict:
        return Parsed("no_answer", rationale=parts.rationale, detail="two different answers")
    if parts.found_json:
        if not isinstance(parts.answer, kinds) or not str(parts.answer).strip():
            return Parsed("no_answer", rationale=parts.rationale, detail="no answer field")
        return str(parts.answer)
    return reply.strip() or Parsed("no_answer", detail="empty reply")


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
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    for shot in prompt.shots:
        messages.append(
            {"role": "user", "content": task_user_text(task, shot.inputs, prompt.style)}
        )
        messages.append(
            {
                "role": "assistant",
                "content": task.reply_text(shot.answer, shot.reason, prompt.style),
            }
        )
    messages.append({"role": "user", "content": user})
    return messages


def shot_answer_problem(task: Task, shot: Shot, style: str) -> str | None:
    """None when a worked example's answer is one the task reads back, else why not. The
    rule is the one every model reply meets: the shot's reply, written in the prompt's style
    as `build_messages` shows it, parsed by the task (so a math task with the calculator
    reads the expression "14 + 5", as it does from the teacher)."""
    parsed = task.parse(task.reply_text(shot.answer, shot.reason, style), style, shot.inputs)
    if parsed.ok:
        return None
    why = parsed.detail or parsed.status.replace("_", " ")
    return f"{shot.answer!r} is not an answer the task reads from a {style} reply ({why})"


def task_user_text(task: Task, inputs: Mapping[str, str], style: str) -> str:
    missing = [f for f in task.input_fields if f not in inputs]
    if missing:
        raise KeyError(f"input is missing field(s) {missing}")
    return task.user_text(inputs, style)


def chat_requests(task: Task, prompt: PromptConfig, examples: list[Example]) -> list[ChatRequest]:
    """One request per example, asked the way `prompt` says."""
    return [
        ChatRequest(task.messages(e.inputs, prompt), prompt.max_tokens, prompt.temperature)
        for e in examples
    ]


def exact_match_scores(
    task: Task, parsed: Sequence[Parsed], examples: Sequence[Example]
) -> list[dict[str, float]]:
    """`accuracy` per example with a reference: the task's own right-or-wrong score."""
    return [
        {"accuracy": task.score(p, e.reference)} if e.reference is not None else {}
        for p, e in zip(parsed, examples)
    ]
