"""Rows that more than one stage writes into its run files, built in one place.

`synth/errors.jsonl` and `eval/errors.jsonl` hold one row per call that failed after its
retries (failed calls are not stored, so a re-run retries them): `id` (the example or
generated input), `phase` (`label`, `generate`, `predict`, `judge_pointwise`,
`judge_pairwise_candidate_first` / `_second`), `status` (the failure's kind: timeout,
connection, http_500, not_sent, ... or `error`), `reason` (its message, key redacted) and
`attempts`; synth adds the `sample` index, evaluate the `candidate` and, for a transfer set,
its `transfer_set`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from potstill.models.base import ChatResponse


def call_failure(response: ChatResponse) -> dict[str, Any]:
    """A failed call's error as a record keeps it (`error`, `error_kind`, `attempts`);
    nothing if it was answered."""
    if response.error is None:
        return {}
    return {
        "error": response.error,
        "error_kind": response.error_kind,
        "attempts": response.attempts,
    }


def error_row(key: str, phase: str, failure: Mapping[str, Any], **where: Any) -> dict[str, Any]:
    """One errors.jsonl row from a record's failure (`call_failure`'s keys): which call failed
    (`key`, `phase` and `where`: sample, candidate, transfer_set), how (`status`) and why
    (`reason`)."""
    return {
        "id": key,
        "phase": phase,
        **where,
        "status": failure.get("error_kind") or "error",
        "reason": failure["error"],
        "attempts": failure.get("attempts"),
    }
