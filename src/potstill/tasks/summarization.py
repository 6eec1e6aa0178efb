"""Summarization: a plain summary, or chain of density (rounds of ever denser summaries,
the last of which is the answer and the training target)."""

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
)
from potstill.tasks.prompts import Prompts, TemplatedTask, default_user_template
from potstill.tasks.replies import balanced, fenced_body, find_json_list, split_reply
from potstill.tasks.text_metrics import open_text_scores, rouge

SUMMARY_KEYS = ("denser_summary", "summary")
_LEAD_IN = re.compile(
    r"^(?:(?:here(?:'s| is)|below is)\b[^\n]*\bsummary\b[^\n]*:|summary\s*:)\s*", re.IGNORECASE
)
_SUMMARY_IN_TEXT = re.compile(r'"(?:denser_summary|answer)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _summary_of(round_: dict[str, Any]) -> Any:
    lowered = {str(k).lower(): v for k, v in round_.items()}
    return next((lowered[k] for k in SUMMARY_KEYS if k in lowered), None)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class SummarizationTask(TemplatedTask):
    kind = "summarization"
    optional_fields: tuple[str, ...] = ()
    reference_match = False
    metrics: tuple[Metric, ...] = (
        Metric("rougeL"),
        Metric("rouge1"),
        Metric("rouge2"),
        Metric("embedding_similarity"),
        # Reported to compare summaries of one budget; shorter is not better by itself.
        Metric("length", higher_is_better=False, needs_reference=False),
        Metric("entity_density", needs_reference=False),
    )

    def __init__(self, config: TaskConfig) -> None:
        self.words = config.summary_words
        self.rounds = config.density_rounds
        self.input_fields: tuple[str, ...] = tuple(config.inputs or ["document"])
        self.description = config.description or "Summarize the article."
        self.prompts = Prompts(
            config.templates,
            default_user=default_user_template(self.input_fields),
            variables=(*self.input_fields, "words", "rounds"),
        )

    def _answer_format(self, style: str) -> str:
        if style == "chain_of_density":
            return (
                f"Write increasingly concise, entity-dense summaries of the article in "
                f"{self.rounds} rounds. In each round, (1) find 1-3 informative entities from "
                "the article that are missing from the previous summary, then (2) write a new, "
                "denser summary of the same length that keeps every entity and detail of the "
                "previous summary and adds the missing ones. The first summary is about "
                f"{self.words} words and rather general. Reply with JSON only: a list of "
                f'{self.rounds} objects, each {{"missing_entities": "<entities>", '
                '"denser_summary": "<summary>"}.'
            )
        if style == "cot":
            return (
                "First note the key points, then reply with JSON only: "
                f'{{"reason": "<the key points>", "answer": "<a summary of about {self.words} '
                'words>"}.'
            )
        return f"Write a summary of about {self.words} words. Reply with only the summary."

    def _variables(self, inputs: Mapping[str, str]) -> dict[str, Any]:
        return {"words": self.words, "rounds": self.rounds}

    def reply_text(self, answer: str, reason: str | None, style: str) -> str:
        if style != "chain_of_density":
            return super().reply_text(answer, reason, style)
        rounds: list[dict[str, Any]] = []
        if reason:
            loaded = json.loads(reason)
            rounds = [r for r in loaded if isinstance(r, dict)] if isinstance(loaded, list) else []
        missing = rounds.pop().get("missing_entities", "") if rounds else ""
        rounds.append({"missing_entities": missing, "denser_summary": answer})
        return json.dumps(rounds, ensure_ascii=False)

    def _rounds(self, reply: str) -> tuple[Any, Parsed | None]:
        """The list of rounds in a reply, or the Parsed that says why there is none."""
        found = find_json_list(reply)
        obj_start = reply.find("{")
        if found is not None and (obj_start == -1 or reply.find("[") < obj_start):
            rounds, error = found
            return rounds, Parsed("malformed", detail=error) if error else None
        if obj_start == -1:
            return None, Parsed("no_answer", detail="no JSON list of rounds")
        try:  # one round written as an object, or {"rounds": [...]}
            data = json.loads(balanced(reply, obj_start))
        except json.JSONDecodeError as exc:
            return None, Parsed("malformed", detail=f"invalid JSON: {exc.msg}")
        if isinstance(data, dict) and isinstance(data.get("rounds"), list):
            return data["rounds"], None
        return [data], None

    def _parse_density(self, reply: str) -> Parsed:
        rounds, failed = self._rounds(fenced_body(reply))
        if failed is not None:
            return failed
        if not isinstance(rounds, list) or not all(isinstance(r, dict) for r in rounds):
            return Parsed("malformed", detail="rounds must be JSON objects")
        if not rounds:
            return Parsed("no_answer", detail="an empty list of rounds")
        summary = _summary_of(rounds[-1])
        if summary is None or not isinstance(summary, str):
            return Parsed("malformed", detail=f"round {len(rounds)} has no denser_summary")
        if not summary.strip():
            return Parsed("no_answer", detail="the last summary is empty")
        last = {k: v for k, v in rounds[-1].items() if str(k).lower() not in SUMMARY_KEYS}
        rationale = json.dumps([*rounds[:-1], last], ensure_ascii=False)
        return Parsed("ok", _one_line(summary), rationale, summary)

    def parse(self, reply: str, style: str, inputs: Mapping[str, str] | None = None) -> Parsed:
        text = reply.strip()
        if not text:
            return Parsed("no_answer", detail="empty reply")
        if style == "chain_of_density":
            return self._parse_density(text)
        if style == "cot" or text.startswith(("{", "```")):
            parts = split_reply(text)
            if parts.json_error:
                return Parsed("malformed", detail=parts.json_error)
            if parts.conflict:
                return Parsed("no_answer", rationale=parts.rationale, detail="two summaries")
            if not parts.found_json:
                return Parsed("no_answer", detail="no JSON object with an answer")
            if not isinstance(parts.answer, str) or not parts.answer.strip():
                return Parsed("no_answer", rationale=parts.rationale, detail="no answer field")
            return Parsed("ok", _one_line(parts.answer), parts.rationale, parts.answer)
        summary = _LEAD_IN.sub("", text, count=1).strip()
        if not re.search(r"\w", summary):
            return Parsed("no_answer", detail="no summary after the lead-in")
        return Parsed("ok", _one_line(summary), None, summary)

    def _found_anywhere(
        self, reply: str, inputs: Mapping[str, str] | None
    ) -> tuple[str, str] | None:
        for quoted in reversed(_SUMMARY_IN_TEXT.findall(reply)):
            try:
                text = json.loads(f'"{quoted}"')
            except json.JSONDecodeError:  # an escape JSON does not know, such as \q
                continue
            if text.strip():
                return _one_line(text), text
        text = reply.strip()
        if text and not text.startswith(("{", "[", "```")) and re.search(r"\w", text):
            return _one_line(text), text
        return None

    def check_reference(
        self, reference: str, inputs: Mapping[str, str] | None = None
    ) -> str | None:
        return None if reference.strip() else "the reference summary is empty"

    def score(self, parsed: Parsed, reference: str) -> float:
        """The headline metric, ROUGE-L F-measure (0 for an unusable reply)."""
        if not parsed.ok or not parsed.answer:
            return 0.0
        return rouge(parsed.answer, reference)["rougeL"]

    def example_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> list[dict[str, float]]:
        return open_text_scores(parsed, examples, rouge_scores=True, density=True)
