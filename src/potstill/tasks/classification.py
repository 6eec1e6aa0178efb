"""Classification over a label set named in the config (or the NLI preset)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from potstill.config import ConfigError, TaskConfig
from potstill.tasks.base import (
    Example,
    Metric,
    Parsed,
    exact_match_scores,
    stated_answer,
)
from potstill.tasks.prompts import Prompts, TemplatedTask, default_user_template
from potstill.tasks.replies import bare_answers, norm_text, split_reply

NLI_LABELS = ["entailment", "neutral", "contradiction"]
# Words models commonly answer NLI with; the preset maps them to its labels.
NLI_SYNONYMS = {
    "entailment": ["entails", "entailed", "entail", "true", "yes"],
    "neutral": ["neither", "unknown", "undetermined", "maybe", "not enough information"],
    "contradiction": ["contradicts", "contradicted", "contradictory", "false", "no"],
}
NLI_DESCRIPTION = (
    "Decide whether the premise entails the hypothesis, contradicts it, or neither (neutral)."
)


def label_table(labels: Sequence[str], synonyms: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Normalized label or synonym -> label. A synonym that names two labels is an error."""
    table = {norm_text(label): label for label in labels}
    for label, words in synonyms.items():
        for word in words:
            key = norm_text(word)
            if table.get(key, label) != label:
                raise ValueError(f"synonym {word!r} of {label!r} already names {table[key]!r}")
            table[key] = label
    return table


def macro_f1(predicted: Sequence[str | None], reference: Sequence[str]) -> float:
    """Mean F1 over the labels seen in the references or the predictions; no answer is wrong."""
    labels = {r for r in reference} | {p for p in predicted if p is not None}
    if not labels:
        return float("nan")
    total = 0.0
    for label in labels:
        tp = sum(1 for p, r in zip(predicted, reference) if p == label and r == label)
        fp = sum(1 for p, r in zip(predicted, reference) if p == label and r != label)
        fn = sum(1 for p, r in zip(predicted, reference) if p != label and r == label)
        total += 2 * tp / (2 * tp + fp + fn)
    return total / len(labels)


class ClassificationTask(TemplatedTask):
    kind = "classification"
    optional_fields: tuple[str, ...] = ()
    reference_match = True
    metrics: tuple[Metric, ...] = (Metric("accuracy"), Metric("macro_f1", corpus=True))

    def __init__(self, config: TaskConfig) -> None:
        nli = config.preset == "nli"
        self.labels = list(config.labels or (NLI_LABELS if nli else []))
        unknown = sorted(set(config.synonyms) - set(self.labels))
        if unknown:
            raise ConfigError(f"task.synonyms: {unknown} not among the labels {self.labels}")
        preset = NLI_SYNONYMS if nli else {}
        synonyms = {k: v for k, v in preset.items() if k in self.labels} | dict(config.synonyms)
        try:
            self._by_norm = label_table(self.labels, synonyms)
        except ValueError as exc:
            raise ConfigError(f"task.synonyms: {exc}") from None
        fields = config.inputs or (["premise", "hypothesis"] if nli else ["text"])
        self.input_fields: tuple[str, ...] = tuple(fields)
        self.description = config.description or (NLI_DESCRIPTION if nli else "Classify the text.")
        self.prompts = Prompts(
            config.templates,
            default_user=default_user_template(self.input_fields),
            variables=(*self.input_fields, "labels"),
        )

    def _answer_format(self, style: str) -> str:
        options = ", ".join(self.labels)
        if style == "cot":
            return (
                f"The labels are: {options}. Think step by step, then reply with JSON only: "
                '{"reason": "<your reasoning>", "answer": "<label>"}.'
            )
        return f"The labels are: {options}. Reply with only the label."

    def _variables(self, inputs: Mapping[str, str]) -> dict[str, Any]:
        return {"labels": self.labels}

    def _label(self, text: str) -> str | None:
        for candidate in bare_answers(text):
            if candidate in self._by_norm:
                return self._by_norm[candidate]
        return None

    def parse(self, reply: str, style: str, inputs: Mapping[str, str] | None = None) -> Parsed:
        parts = split_reply(reply)
        raw = stated_answer(reply, parts, (str, int, float))
        if isinstance(raw, Parsed):
            return raw
        label = self._label(raw)
        if label is None:
            return Parsed(
                "no_answer",
                rationale=parts.rationale,
                raw_answer=raw,
                detail=f"{raw[:60]!r} is not one of the labels",
            )
        return Parsed("ok", label, parts.rationale, raw)

    def _found_anywhere(
        self, reply: str, inputs: Mapping[str, str] | None
    ) -> tuple[str, str] | None:
        text = reply.lower()
        found = {
            label
            for norm, label in self._by_norm.items()
            if re.search(rf"(?<!\w){re.escape(norm)}(?!\w)", text)
        }
        if len(found) != 1:  # none, or several labels named: still no answer
            return None
        return found.pop(), reply.strip()

    def check_reference(
        self, reference: str, inputs: Mapping[str, str] | None = None
    ) -> str | None:
        if norm_text(reference) in self._by_norm:
            return None
        return f"label {reference!r} is not in the label set {self.labels}"

    def canonical_reference(self, reference: str, inputs: Mapping[str, str] | None = None) -> str:
        return self._by_norm.get(norm_text(reference), reference)

    def score(self, parsed: Parsed, reference: str) -> float:
        if not parsed.ok or parsed.answer is None:
            return 0.0
        return float(parsed.answer == self.canonical_reference(reference))

    def example_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> list[dict[str, float]]:
        return exact_match_scores(self, parsed, examples)

    def corpus_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> dict[str, float]:
        predicted = [p.answer if p.ok else None for p in parsed]
        reference = [self.canonical_reference(e.reference or "") for e in examples]
        return {"macro_f1": macro_f1(predicted, reference)}

    def details(self, parsed: Sequence[Parsed], examples: Sequence[Example]) -> dict[str, Any]:
        """The confusion matrix: rows are references, columns predictions (+ no answer)."""
        columns = [*self.labels, "no answer"]
        matrix = [[0] * len(columns) for _ in self.labels]
        for p, e in zip(parsed, examples):
            if e.reference is None:
                continue
            row = self.labels.index(self.canonical_reference(e.reference))
            column = self.labels.index(p.answer) if p.ok and p.answer else len(self.labels)
            matrix[row][column] += 1
        return {"confusion": {"labels": self.labels, "columns": columns, "matrix": matrix}}
