"""Why an input or a teacher reply cannot become a training row."""

from __future__ import annotations

from collections.abc import Mapping

from potstill.config import RunConfig, SynthConfig
from potstill.figures import percent
from potstill.synth.overlap import Contamination, NearDuplicates, input_text, normalized, words
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


def evaluation_texts(
    task: Task, test: list[Example], transfer: Mapping[str, list[Example]] | None = None
) -> dict[str, str]:
    """The input text of every evaluation example, keyed by how a message names it: a test
    example by its id, a transfer example as `<set>/<id>`."""
    texts = {e.id: input_text(task.input_fields, e.inputs) for e in test}
    for name, examples in (transfer or {}).items():
        texts.update({f"{name}/{e.id}": input_text(task.input_fields, e.inputs) for e in examples})
    return texts


def screen_inputs(
    task: Task,
    config: SynthConfig,
    train: list[Example],
    generated: list[Example],
    test: list[Example],
    transfer: Mapping[str, list[Example]] | None = None,
) -> dict[str, tuple[str, str]]:
    """Inputs not worth a teacher call, by id: (reason, detail).

    `contamination`: the input shares `contamination_threshold` of its word n-grams with one
    evaluation item (of the test split or a transfer set). `duplicate`: the same words as an
    earlier input. `near_duplicate` (generated inputs only): word 3-gram Jaccard similarity
    to an earlier input at or above `near_duplicate_threshold`. Training inputs come first,
    so a generated copy of one is what gets dropped.
    """
    contamination = Contamination(
        evaluation_texts(task, test, transfer),
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
            found[example.id] = ("contamination", f"{percent(hit[1])} of its {n}-grams in {hit[0]}")
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


def shot_overlaps(
    task: Task,
    config: SynthConfig,
    shots: list[tuple[str, dict[str, str]]],
    evaluation: Mapping[str, list[Example]],
) -> list[str]:
    """Each worked example (config key, inputs) that repeats an evaluation example, screened
    as training inputs are: the same words, `contamination_threshold` of its word n-grams in
    one evaluation item (for a shot of at least n words: a short shot such as "Great!" inside
    a longer review is not a copy of it), or word 3-gram Jaccard similarity at or above
    `near_duplicate_threshold`. `evaluation` maps a set's name ("test", "transfer set 'x'")
    to its examples; one message per shot names the shot and the example."""
    keyed = {
        f"{where} example {e.id!r}": input_text(task.input_fields, e.inputs)
        for where, examples in evaluation.items()
        for e in examples
    }
    exact = {normalized(text): key for key, text in reversed(keyed.items())}
    contamination = Contamination(keyed, config.contamination_ngram, config.contamination_threshold)
    near = NearDuplicates(config.near_duplicate_threshold)
    for key, text in keyed.items():
        near.add(key, text)
    found, n = [], config.contamination_ngram
    for where, inputs in shots:
        try:
            text = input_text(task.input_fields, inputs)
        except KeyError:  # a shot without the task's inputs fails where prompts are built
            continue
        shown = " ".join(text.split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        if normalized(text) in exact:
            found.append(f"{where} ({shown!r}) has the same words as {exact[normalized(text)]}")
        elif len(words(text)) >= n and (hit := contamination.contaminated(text)):
            found.append(
                f"{where} ({shown!r}) nearly repeats {hit[0]} ({percent(hit[1])} of its word "
                f"{n}-grams are in it)"
            )
        elif match := near.match(text):
            found.append(
                f"{where} ({shown!r}) nearly repeats {match[0]} (word 3-gram Jaccard "
                f"{match[1]:.2f})"
            )
    return found
