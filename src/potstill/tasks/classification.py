"""Classification over a label set named in the config."""

from __future__ import annotations

import re

from potstill.config import PromptConfig, TaskConfig
from potstill.models.base import Message
from potstill.tasks.base import Parsed, build_messages, render_reply, task_user_text
from potstill.tasks.replies import split_reply


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".!\"'`*").strip()).lower()


class ClassificationTask:
    kind = "classification"
    input_fields: tuple[str, ...] = ("text",)

    def __init__(self, config: TaskConfig) -> None:
        assert config.labels  # guaranteed by TaskConfig's validator
        self.labels = list(config.labels)
        self._by_norm = {_norm(label): label for label in self.labels}
        self.description = config.description or "Classify the text."

    def _system(self, style: str) -> str:
        options = ", ".join(self.labels)
        if style == "cot":
            return (
                f"{self.description} The labels are: {options}. Think step by step, then "
                'reply with JSON only: {"reason": "<your reasoning>", "answer": "<label>"}.'
            )
        return f"{self.description} The labels are: {options}. Reply with only the label."

    def messages(self, inputs: dict[str, str], prompt: PromptConfig) -> list[Message]:
        return build_messages(
            self._system(prompt.style), task_user_text(self, inputs), prompt, self
        )

    def reply_text(self, answer: str, reason: str | None, style: str) -> str:
        return render_reply(answer, reason, style)

    def parse(self, reply: str, style: str) -> Parsed:
        parts = split_reply(reply)
        if parts.json_error:
            return Parsed("malformed", detail=parts.json_error)
        raw = str(parts.answer) if parts.found_json and parts.answer is not None else None
        if not parts.found_json:
            raw = reply
        if raw is None or not raw.strip():
            return Parsed("no_answer", rationale=parts.rationale, detail="no answer")
        label = self._by_norm.get(_norm(raw))
        if label is None:
            return Parsed(
                "no_answer",
                rationale=parts.rationale,
                raw_answer=raw,
                detail=f"{raw[:60]!r} is not one of the labels",
            )
        return Parsed("ok", label, parts.rationale, raw)

    def parse_flexible(self, reply: str, style: str) -> Parsed:
        strict = self.parse(reply, style)
        if strict.ok:
            return strict
        text = reply.lower()
        found = {
            label
            for norm, label in self._by_norm.items()
            if re.search(rf"(?<!\w){re.escape(norm)}(?!\w)", text)
        }
        if len(found) != 1:  # none, or several labels named: still no answer
            return strict
        return Parsed("ok", found.pop(), None, reply.strip(), detail="flexible")

    def check_reference(self, reference: str) -> str | None:
        if _norm(reference) in self._by_norm:
            return None
        return f"label {reference!r} is not in the label set {self.labels}"

    def score(self, parsed: Parsed, reference: str) -> float:
        if not parsed.ok or parsed.answer is None:
            return 0.0
        return float(_norm(parsed.answer) == _norm(reference))
