"""Metrics for open text (summaries, conversation replies): ROUGE, embedding similarity to the
reference, length, and entity density."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from potstill.tasks.base import Example, Parsed
from potstill.tasks.embedding import similarity

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_WORD = re.compile(r"\w+(?:['’]\w+)?")
# A run of capitalised words, or a number: a named-entity proxy that needs no NER model.
_ENTITY = re.compile(
    r"\b(?:[A-Z][\w'’-]*(?:\s+(?:of|de|von|van|the)?\s*[A-Z][\w'’-]*)*)|\b\d[\d,.]*\b"
)
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|\n)\s*$")


@functools.lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(text: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure of a text against its reference (Porter stemming)."""
    scores = _rouge().score(reference, text)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def entities(text: str) -> set[str]:
    """Distinct entity mentions: runs of capitalised words (a sentence's first word does not
    count) and numbers. A proxy for named entities (chain of density's measure) that needs no
    NER model; it misses an entity that only ever opens a sentence."""
    found = set()
    for match in _ENTITY.finditer(text):
        span = match.group(0).strip()
        if not span[0].isdigit() and _SENTENCE_START.search(text[: match.start()]):
            # a sentence's first word is capitalised anyway: keep only the words after it
            span = " ".join(span.split()[1:])
        if span:
            found.add(span.lower())
    return found


def entity_density(text: str) -> float:
    """Distinct entities per word."""
    words = word_count(text)
    return len(entities(text)) / words if words else 0.0


def open_text_scores(
    parsed: Sequence[Parsed],
    examples: Sequence[Example],
    *,
    rouge_scores: bool,
    density: bool,
) -> list[dict[str, float]]:
    """Per example: ROUGE (if asked) and embedding similarity against the reference, where
    there is one (an unusable reply scores 0); length (and entity density) of usable replies."""
    rows: list[dict[str, float]] = [{} for _ in parsed]
    pairs = [
        (i, p.answer or "", e.reference)
        for i, (p, e) in enumerate(zip(parsed, examples))
        if e.reference is not None
    ]
    usable = [(i, text, ref) for i, text, ref in pairs if parsed[i].ok and text.strip()]
    sims = similarity([t for _, t, _ in usable], [r for _, _, r in usable])
    by_index = {i: s for (i, _, _), s in zip(usable, sims)}
    for i, text, ref in pairs:
        ok = i in by_index
        if rouge_scores:
            rows[i].update(rouge(text, ref) if ok else dict.fromkeys(ROUGE_TYPES, 0.0))
        rows[i]["embedding_similarity"] = by_index.get(i, 0.0)
    for i, p in enumerate(parsed):
        if p.ok and p.answer:
            rows[i]["length"] = float(word_count(p.answer))
            if density:
                rows[i]["entity_density"] = entity_density(p.answer)
    return rows
