"""Math word problems with a numeric answer, optionally worked out by a calculator."""

from __future__ import annotations

from potstill.config import PromptConfig, TaskConfig
from potstill.models.base import Message
from potstill.tasks.base import Parsed, build_messages, render_reply, task_user_text
from potstill.tasks.replies import (
    calculate,
    find_expression,
    format_number,
    last_number,
    parse_number,
    split_reply,
)


class MathTask:
    kind = "math"
    input_fields: tuple[str, ...] = ("question",)

    def __init__(self, config: TaskConfig) -> None:
        self.calculator = config.calculator
        self.description = config.description or "Solve the math word problem."

    def _system(self, style: str) -> str:
        if self.calculator:
            what = "an arithmetic expression that computes the answer, such as 12 + 7"
            slot = '"<arithmetic expression>"'
        else:
            what = "the final answer as a number"
            slot = "<number>"
        if style == "cot":
            return (
                f"{self.description} Think step by step, then reply with JSON only: "
                f'{{"reason": "<your reasoning>", "answer": {slot}}}. The answer is {what}.'
            )
        return f"{self.description} Reply with only {what}."

    def messages(self, inputs: dict[str, str], prompt: PromptConfig) -> list[Message]:
        return build_messages(
            self._system(prompt.style), task_user_text(self, inputs), prompt, self
        )

    def reply_text(self, answer: str, reason: str | None, style: str) -> str:
        return render_reply(answer, reason, style)

    def _value(self, text: str) -> float | None:
        value = parse_number(text)
        if value is None and self.calculator:
            value = calculate(text)
        return value

    def parse(self, reply: str, style: str) -> Parsed:
        parts = split_reply(reply)
        if parts.json_error:
            return Parsed("malformed", detail=parts.json_error)
        if parts.found_json:
            if parts.answer is None or str(parts.answer).strip() == "":
                return Parsed("no_answer", rationale=parts.rationale, detail="no answer field")
            raw = str(parts.answer)
            value = self._value(raw)
            if value is None:
                return Parsed(
                    "malformed",
                    rationale=parts.rationale,
                    raw_answer=raw,
                    detail=f"answer {raw!r} is not a number",
                )
            return Parsed("ok", format_number(value), parts.rationale, raw)
        raw = reply.strip()
        if not raw:
            return Parsed("no_answer", detail="empty reply")
        value = self._value(raw)
        if value is None:
            return Parsed("no_answer", detail="no numeric answer in the reply")
        return Parsed("ok", format_number(value), None, raw)

    def parse_flexible(self, reply: str, style: str) -> Parsed:
        strict = self.parse(reply, style)
        if strict.ok:
            return strict
        value = find_expression(reply) if self.calculator else None
        if value is None:
            value = last_number(reply)
        if value is None:
            return strict
        return Parsed("ok", format_number(value), None, reply.strip(), detail="flexible")

    def check_reference(self, reference: str) -> str | None:
        return None if parse_number(reference) is not None else f"{reference!r} is not a number"

    def score(self, parsed: Parsed, reference: str) -> float:
        if not parsed.ok or parsed.answer is None:
            return 0.0
        ref = parse_number(reference)
        got = parse_number(parsed.answer)
        if ref is None or got is None:
            return 0.0
        return float(abs(got - ref) <= 1e-6 * max(1.0, abs(ref)))
