"""Text overlap, the one home of every overlap screen: exact and near-duplicate inputs
(MinHash LSH), n-gram contamination of one evaluation item, and the overlap of a whole split
with the training split. Every screen reads the same text of an input (`input_text`: its
fields without any prompt template, so a template's own words never count as overlap) and
the same words (`words`)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")
_PERMUTATIONS, _BANDS = 128, 32  # 32 bands of 4 rows: pairs above ~0.45 Jaccard meet
# The largest prime below 2**32: (a * h + b) with a, b, h below it fits in 64 bits exactly,
# so (a * h + b) mod p is a true universal hash and each of the 128 is a fair permutation.
_PRIME = 4294967291


def input_text(fields: Sequence[str], inputs: Mapping[str, str]) -> str:
    """An input's own text, without any prompt template around it: the field's value, or
    `Field: value` lines when the task has several input fields."""
    missing = [f for f in fields if f not in inputs]
    if missing:
        raise KeyError(f"input is missing field(s) {missing}")
    if len(fields) == 1:
        return inputs[fields[0]]
    return "\n".join(f"{f.capitalize()}: {inputs[f]}" for f in fields)


def words(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation and spacing do not count."""
    return _WORD.findall(text.lower())


def normalized(text: str) -> str:
    """What two inputs must share to be exact duplicates."""
    return " ".join(words(text))


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _hash32(gram: tuple[str, ...]) -> int:
    # A stable hash (Python's own changes per process), so decisions repeat across runs.
    return int.from_bytes(hashlib.blake2b(" ".join(gram).encode(), digest_size=4).digest())


@cache
def _permutations() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(1, _PRIME, _PERMUTATIONS, dtype=np.uint64)
    b = rng.integers(0, _PRIME, _PERMUTATIONS, dtype=np.uint64)
    return a, b


def jaccard(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicates:
    """Finds an earlier text whose word 3-gram Jaccard similarity reaches `threshold`.

    MinHash signatures bucketed by bands (locality-sensitive hashing) propose candidates;
    each candidate is then checked with the exact Jaccard similarity, so a match is never
    a hash accident, and the work grows with the number of similar texts, not all pairs.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._shingles: dict[str, set[tuple[str, ...]]] = {}
        self._buckets: dict[tuple[int, bytes], list[str]] = defaultdict(list)

    @staticmethod
    def _signature(shingles: set[tuple[str, ...]]) -> np.ndarray:
        hashes = np.array(sorted(_hash32(s) % _PRIME for s in shingles), dtype=np.uint64)
        a, b = _permutations()
        prime = np.uint64(_PRIME)
        return np.asarray(((a[:, None] * hashes[None, :] + b[:, None]) % prime).min(axis=1))

    def _bands(self, shingles: set[tuple[str, ...]]) -> list[tuple[int, bytes]]:
        signature = self._signature(shingles)
        rows = _PERMUTATIONS // _BANDS
        return [(i, signature[i * rows : (i + 1) * rows].tobytes()) for i in range(_BANDS)]

    def match(self, text: str) -> tuple[str, float] | None:
        """The most similar earlier text at or above the threshold, and its similarity."""
        shingles = ngrams(words(text), 3)
        if not shingles:
            return None
        candidates = {k for band in self._bands(shingles) for k in self._buckets.get(band, [])}
        scored = [(jaccard(shingles, self._shingles[k]), k) for k in sorted(candidates)]
        best = max(scored, default=None, key=lambda s: s[0])
        return (best[1], best[0]) if best and best[0] >= self.threshold else None

    def add(self, key: str, text: str) -> None:
        shingles = ngrams(words(text), 3)
        if not shingles:
            return
        self._shingles[key] = shingles
        for band in self._bands(shingles):
            self._buckets[band].append(key)


class Contamination:
    """Checks texts against the evaluation split: the share of a text's word n-grams that
    occur in one test item. Texts shorter than n words are compared whole."""

    def __init__(self, test_texts: dict[str, str], n: int, threshold: float) -> None:
        self.n = n
        self.threshold = threshold
        self._tokens = {key: words(text) for key, text in test_texts.items()}
        self._index: dict[int, dict[tuple[str, ...], set[str]]] = {}

    def _grams_index(self, size: int) -> dict[tuple[str, ...], set[str]]:
        if size not in self._index:
            index: dict[tuple[str, ...], set[str]] = defaultdict(set)
            for key, tokens in self._tokens.items():
                for gram in ngrams(tokens, size):
                    if len(gram) == size:
                        index[gram].add(key)
            self._index[size] = index
        return self._index[size]

    def overlap(self, text: str) -> tuple[str, float] | None:
        """The test item sharing the largest share of this text's n-grams, and the share."""
        tokens = words(text)
        if not tokens:
            return None
        size = min(self.n, len(tokens))
        grams = ngrams(tokens, size)
        index = self._grams_index(size)
        hits: Counter[str] = Counter()
        for gram in grams:
            hits.update(index.get(gram, ()))
        if not hits:
            return None
        key, count = min(hits.items(), key=lambda kv: (-kv[1], kv[0]))
        return key, count / len(grams)

    def contaminated(self, text: str) -> tuple[str, float] | None:
        found = self.overlap(text)
        return found if found and found[1] >= self.threshold else None


def split_overlap(texts: Sequence[str], training: Sequence[str], n: int) -> dict[str, Any]:
    """How much of each text's word n-grams occur anywhere in the training texts (their
    union), and how many texts repeat a training text exactly: the evaluation's train/test
    overlap figure. It differs from `Contamination`, which asks whether one input is a copy
    of one evaluation item (its n-grams found in that single item), because the two answer
    different questions: may a score reward memory (a split's share), and is this training
    input an evaluation item (one pair)."""
    seen = set().union(*(ngrams(words(t), n) for t in training)) if training else set()
    exact = {normalized(t) for t in training}
    shares, duplicates = [], 0
    for text in texts:
        grams = ngrams(words(text), n)
        shares.append(len(grams & seen) / len(grams) if grams else 0.0)
        duplicates += normalized(text) in exact
    return {
        "ngram": n,
        "test_examples": len(texts),
        "exact_duplicates": duplicates,
        "mean_overlap": sum(shares) / len(shares) if shares else 0.0,
        "half_overlapping_rate": sum(s >= 0.5 for s in shares) / len(shares) if shares else 0.0,
    }
