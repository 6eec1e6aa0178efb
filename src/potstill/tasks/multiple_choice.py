"""Multiple choice: a question and two to five lettered options (A-E); the answer is a letter."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from potstill.config import TaskConfig
from potstill.tasks.base import (
    Example,
    Metric,
    Parsed,
    exact_match_scores,
    stated_answer,
)
from potstill.tasks.prompts import Prompts, TemplatedTask
from potstill.tasks.replies import bare_answers, norm_text, split_reply

LETTERS = "ABCDE"
USER_TEMPLATE = (
    "{{ question }}\n\n{% for option in options %}{{ option.letter }}) {{ option.text }}\n"
    "{% endfor %}"
)
_OPTION_PREFIX = re.compile(r"^\(?([A-Ea-e])[).:]\s+")
# "B", "(B)", "B)", "B.", "Option B", "B) text", "answer: (b) text"
_LETTER_REPLY = re.compile(r"^(?:option\s+)?\(?([a-e])\)?(?:[).:]\s*(.*))?$")
_LETTER_IN_PROSE = re.compile(
    r"(?:answer\s+is|answer:|option|choice)\s*\(?([A-E])\b\)?|\(([A-E])\)|(?:^|\s)([A-E])\)",
    re.IGNORECASE,
)


def parse_options(text: str) -> list[str]:
    """Options from a JSON list, or from one option per line (an `A) ` prefix is dropped)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
    lines = [line.strip() for line in stripped.splitlines() if line.strip()]
    return [_OPTION_PREFIX.sub("", line, count=1) for line in lines]


class MultipleChoiceTask(TemplatedTask):
    kind = "multiple_choice"
    input_fields: tuple[str, ...] = ("question", "options")
    optional_fields: tuple[str, ...] = ()
    reference_match = True
    metrics: tuple[Metric, ...] = (Metric("accuracy"),)

    def __init__(self, config: TaskConfig) -> None:
        self.description = config.description or "Answer the multiple-choice question."
        self.prompts = Prompts(
            config.templates, default_user=USER_TEMPLATE, variables=(*self.input_fields,)
        )

    def _answer_format(self, style: str) -> str:
        if style == "cot":
            return (
                "Think step by step, then reply with JSON only: "
                '{"reason": "<your reasoning>", "answer": "<letter>"}.'
            )
        return "Reply with only the letter of the correct option."

    def _variables(self, inputs: Mapping[str, str]) -> dict[str, Any]:
        options = parse_options(inputs.get("options", ""))
        return {"options": [{"letter": LETTERS[i], "text": t} for i, t in enumerate(options)]}

    def _letter(self, text: str, options: list[str]) -> tuple[str | None, str]:
        """The letter a stated answer names, or (None, why not)."""
        by_text = {norm_text(t): LETTERS[i] for i, t in enumerate(options)}
        count = len(options) or len(LETTERS)
        for candidate in bare_answers(text):
            match = _LETTER_REPLY.match(candidate)
            if match:
                letter, rest = match.group(1).upper(), norm_text(match.group(2) or "")
                if LETTERS.index(letter) >= count:
                    return None, f"{letter} is not an option"
                named = by_text.get(rest)
                if rest and named is not None and named != letter:
                    return None, f"{letter} and the text of {named} disagree"
                if rest and re.match(r"^(or|and|/)\s*\(?[a-e]\b", rest):
                    return None, "two letters"
                return letter, ""
            if candidate in by_text:
                return by_text[candidate], ""
        return None, f"{text.strip()[:60]!r} names no option"

    def parse(self, reply: str, style: str, inputs: Mapping[str, str] | None = None) -> Parsed:
        options = parse_options((inputs or {}).get("options", ""))
        parts = split_reply(reply)
        raw = stated_answer(reply, parts)
        if isinstance(raw, Parsed):
            return raw
        letter, why = self._letter(raw, options)
        if letter is None:
            return Parsed("no_answer", rationale=parts.rationale, raw_answer=raw, detail=why)
        return Parsed("ok", letter, parts.rationale, raw)

    def _found_anywhere(
        self, reply: str, inputs: Mapping[str, str] | None
    ) -> tuple[str, str] | None:
        options = parse_options((inputs or {}).get("options", ""))
        found = {next(g for g in m.groups() if g).upper() for m in _LETTER_IN_PROSE.finditer(reply)}
        found = {f for f in found if LETTERS.index(f) < (len(options) or len(LETTERS))}
        if not found:
            text = norm_text(reply)
            found = {
                LETTERS[i]
                for i, t in enumerate(options)
                if re.search(rf"(?<!\w){re.escape(norm_text(t))}(?!\w)", text)
            }
        if len(found) != 1:
            return None
        return found.pop(), reply.strip()

    def check_inputs(self, inputs: Mapping[str, str]) -> tuple[str, str] | None:
        count = len(parse_options(inputs.get("options", "")))
        if not 2 <= count <= len(LETTERS):
            return "options", f"needs 2 to {len(LETTERS)} options, got {count}"
        return None

    def check_reference(
        self, reference: str, inputs: Mapping[str, str] | None = None
    ) -> str | None:
        options = parse_options((inputs or {}).get("options", "")) if inputs else []
        letter, _ = self._letter(reference, options)
        if letter is None:
            return f"{reference!r} is not a letter A-{LETTERS[max(len(options), 2) - 1]}"
        return None

    def canonical_reference(self, reference: str, inputs: Mapping[str, str]) -> str:
        """A reference given as an option's text or `(b)` becomes its letter."""
        letter, _ = self._letter(reference, parse_options(inputs.get("options", "")))
        return letter or reference

    def score(self, parsed: Parsed, reference: str) -> float:
        if not parsed.ok or parsed.answer is None:
            return 0.0
        letter, _ = self._letter(reference, [])
        return float(parsed.answer == letter)

    def example_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> list[dict[str, float]]:
        return exact_match_scores(self, parsed, examples)
