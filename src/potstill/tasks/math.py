"""Math problems with a numeric answer (integers, decimals, fractions, negative numbers),
optionally worked out by a calculator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from potstill.config import TaskConfig
from potstill.tasks.base import (
    Example,
    Metric,
    Parsed,
    exact_match_scores,
)
from potstill.tasks.prompts import Prompts, TemplatedTask, default_user_template
from potstill.tasks.replies import (
    calculate,
    find_boxed,
    find_expression,
    find_marked_answers,
    format_number,
    last_number,
    parse_number,
    split_reply,
)


class MathTask(TemplatedTask):
    kind = "math"
    optional_fields: tuple[str, ...] = ()
    reference_match = True
    metrics: tuple[Metric, ...] = (Metric("accuracy"),)

    def __init__(self, config: TaskConfig) -> None:
        self.calculator = config.calculator
        self.tolerance = config.tolerance
        self.input_fields: tuple[str, ...] = tuple(config.inputs or ["question"])
        self.description = config.description or "Solve the math word problem."
        self.prompts = Prompts(
            config.templates,
            default_user=default_user_template(self.input_fields),
            variables=self.input_fields,
        )

    def _answer_format(self, style: str) -> str:
        if self.calculator:
            what = "an arithmetic expression that computes the answer, such as 12 + 7"
            slot = '"<arithmetic expression>"'
        else:
            what = "the final answer as a number"
            slot = "<number>"
        if style == "cot":
            return (
                "Think step by step, then reply with JSON only: "
                f'{{"reason": "<your reasoning>", "answer": {slot}}}. The answer is {what}.'
            )
        return f"Reply with only {what}."

    def target_answer(self, parsed: Parsed) -> str:
        # With the calculator the answer format is an expression ("22 - 9"), which the
        # calculator works out for the student as for the teacher; else the number itself.
        if self.calculator and parsed.raw_answer is not None:
            return parsed.raw_answer
        return str(parsed.answer)

    def _value(self, text: str) -> float | None:
        value = parse_number(text)
        if value is None and self.calculator:
            value = calculate(text)
        return value

    def _marked(self, reply: str) -> Parsed | None:
        """An answer behind a final-answer marker (\\boxed{}, `#### `), if the reply has one."""
        marked = find_boxed(reply) or find_marked_answers(reply)
        if not marked:
            return None
        values = {self._value(m) for m in marked}
        if None in values:
            return Parsed("no_answer", raw_answer=marked[-1], detail="marked answer not a number")
        if len(values) > 1:
            return Parsed("no_answer", raw_answer=marked[-1], detail="two different answers")
        value = values.pop()
        assert value is not None
        return Parsed("ok", format_number(value), None, marked[-1])

    def parse(self, reply: str, style: str, inputs: Mapping[str, str] | None = None) -> Parsed:
        parts = split_reply(reply)
        if parts.json_error:
            return Parsed("malformed", detail=parts.json_error)
        if parts.found_json:
            if parts.conflict:
                return Parsed("no_answer", rationale=parts.rationale, detail="two answers")
            if parts.answer is None or str(parts.answer).strip() == "":
                return Parsed("no_answer", rationale=parts.rationale, detail="no answer field")
            raw = str(parts.answer)
            value = None if isinstance(parts.answer, bool | list | dict) else self._value(raw)
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
        marked = self._marked(raw)
        if marked is not None:
            return marked
        for candidate in (raw, raw.splitlines()[0].strip()):
            value = self._value(candidate)
            if value is not None:
                return Parsed("ok", format_number(value), None, candidate)
        return Parsed("no_answer", detail="no numeric answer in the reply")

    def _found_anywhere(
        self, reply: str, inputs: Mapping[str, str] | None
    ) -> tuple[str, str] | None:
        value = find_expression(reply) if self.calculator else None
        if value is None:
            value = last_number(reply)
        return None if value is None else (format_number(value), reply.strip())

    def check_reference(
        self, reference: str, inputs: Mapping[str, str] | None = None
    ) -> str | None:
        return None if parse_number(reference) is not None else f"{reference!r} is not a number"

    def score(self, parsed: Parsed, reference: str) -> float:
        if not parsed.ok or parsed.answer is None:
            return 0.0
        ref = parse_number(reference)
        got = parse_number(parsed.answer)
        if ref is None or got is None:
            return 0.0
        return float(abs(got - ref) <= self.tolerance * max(1.0, abs(ref)))

    def example_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> list[dict[str, float]]:
        return exact_match_scores(self, parsed, examples)
