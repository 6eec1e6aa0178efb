"""Why an input or a teacher reply cannot become a training row."""

from __future__ import annotations

from potstill.config import RunConfig, SynthConfig
from potstill.synth.overlap import Contamination, NearDuplicates, input_text, normalized
from potstill.tasks import Example, Parsed, Task

# Rejections that depend on the settings a student variant may change (`target`,
# `require_reference_match`, the completion's length bounds); a variant judges these afresh.
# Every other reason (failed call, cut-off or unparseable reply, screened input) keeps a
# teacher reply out of every student's data.
SETTING_REASONS = frozenset({"no_rationale", "disagrees_with_reference", "too_short", "too_long"})


def rejection_reason(
    parsed: Parsed, finish: str, error: str | None, example: Example, task: Task, config: RunConfig
) -> str | None:
    """Why a teacher reply cannot be a training row, or None when it can."""
    if error:
        return "call_failed"
    if finish != "stop":
        return f"finish_{finish}"
    if parsed.status != "ok":
        return parsed.status
    if config.synth.target == "rationale_answer" and not parsed.rationale:
        return "no_rationale"
    if (
        config.synth.require_reference_match
        and task.reference_match
        and example.reference is not None
        and task.score(parsed, example.reference) < 1.0
    ):
        return "disagrees_with_reference"
    return None


def length_reason(completion: str, config: SynthConfig) -> str | None:
    """`too_short` or `too_long` when the training completion is outside the bounds."""
    if config.min_completion_chars is not None and len(completion) < config.min_completion_chars:
        return "too_short"
    if config.max_completion_chars is not None and len(completion) > config.max_completion_chars:
        return "too_long"
    return None


def screen_inputs(
    task: Task,
    config: SynthConfig,
    train: list[Example],
    generated: list[Example],
    test: list[Example],
) -> dict[str, tuple[str, str]]:
    """Inputs not worth a teacher call, by id: (reason, detail).

    `contamination`: the input shares `contamination_threshold` of its word n-grams with one
    test item. `duplicate`: the same words as an earlier input. `near_duplicate` (generated
    inputs only): word 3-gram Jaccard similarity to an earlier input at or above
    `near_duplicate_threshold`. Training inputs come first, so a generated copy of one is
    what gets dropped.
    """
    contamination = Contamination(
        {e.id: input_text(task.input_fields, e.inputs) for e in test},
        config.contamination_ngram,
        config.contamination_threshold,
    )
    near = NearDuplicates(config.near_duplicate_threshold) if generated else None
    seen: dict[str, str] = {}
    found: dict[str, tuple[str, str]] = {}
    generated_ids = {e.id for e in generated}
    for example in [*train, *generated]:
        text = input_text(task.input_fields, example.inputs)
        hit = contamination.contaminated(text)
        if hit:
            n = config.contamination_ngram
            found[example.id] = ("contamination", f"{hit[1]:.0%} of its {n}-grams in {hit[0]}")
            continue
        key = normalized(text)
        if key in seen:
            found[example.id] = ("duplicate", f"same words as {seen[key]}")
            continue
        if near is not None and example.id in generated_ids:
            match = near.match(text)
            if match:
                found[example.id] = ("near_duplicate", f"Jaccard {match[1]:.2f} with {match[0]}")
                continue
        seen[key] = example.id
        if near is not None:
            near.add(example.id, text)
    return found
