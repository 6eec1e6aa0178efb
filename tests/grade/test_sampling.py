"""The graded sample: seeded, stratified, with an overlap every grader sees."""

from collections import Counter

from potstill.config import Rubric
from potstill.evaluate.rubrics import graded_criteria
from potstill.evaluate.rubrics import rubric_for as judge_rubric_for
from potstill.grade.sampling import assign, draw_sample, strata, stratified_sample


def test_stratified_sample_keeps_each_stratum_share_and_is_seeded() -> None:
    import random

    groups = {f"e{i}": ("rare" if i < 10 else "common") for i in range(100)}
    sample = stratified_sample(groups, 20, random.Random(3))
    assert len(sample) == len(set(sample)) == 20
    assert Counter(groups[i] for i in sample) == {"common": 18, "rare": 2}
    assert sample == stratified_sample(groups, 20, random.Random(3))
    assert sample != stratified_sample(groups, 20, random.Random(4))


def test_draw_sample_overlap_first_and_never_more_than_exists() -> None:
    groups = {f"e{i}": f"label={i % 3}" for i in range(30)}
    sample = draw_sample(groups, 12, 6, seed=0)
    assert len(sample) == len(set(sample)) == 12
    assert Counter(groups[i] for i in sample[:6]) == {"label=0": 2, "label=1": 2, "label=2": 2}
    assert draw_sample(groups, 100, 6, seed=0)[:6] == sample[:6]
    assert len(draw_sample(groups, 100, 6, seed=0)) == 30


def test_strata_by_label_for_labelled_kinds_else_by_outcome() -> None:
    refs = {"a": "Yes", "b": "no", "c": None}
    preds = {"teacher": {"a": {"score": 1.0}, "b": {"score": 0.0}}, "s": {"a": {"score": 0.0}}}
    assert strata("classification", ["a", "b", "c"], refs, preds) == {
        "a": "label=yes",
        "b": "label=no",
        "c": "no reference",
    }
    assert strata("math", ["a", "b"], refs, preds) == {"a": "s:0 teacher:1", "b": "s:- teacher:0"}


def test_assign_shares_the_overlap_and_balances_the_rest() -> None:
    sample = [f"e{i}" for i in range(10)]
    load: Counter[str] = Counter()
    shares = []
    for grader in ("ann", "bob", "cy"):
        share = assign(sample, 4, 6, load, 0, grader)
        load.update(share)
        shares.append(share)
    assert all(s[:4] == sample[:4] and len(s) == 6 for s in shares)
    rest = Counter(i for s in shares for i in s[4:])
    assert set(rest) == set(sample[4:]) and max(rest.values()) == 1
    assert assign(sample, 4, None, load, 0, "dee") == sample


def test_humans_score_the_judges_criteria_with_a_generic_fallback() -> None:
    for kind in ("math", "classification", "multiple_choice", "summarization", "conversation"):
        judge = judge_rubric_for(kind)[1]
        assert [c.name for c in graded_criteria(kind)] == [c.name for c in judge.criteria]
        assert all(
            c.description.endswith(" 5: fully; 1: not at all.") for c in graded_criteria(kind)
        )
    assert graded_criteria("summarization")[0].name == "faithfulness"
    generic = judge_rubric_for("generic")[1]
    assert [c.name for c in graded_criteria("no-such-kind")] == [c.name for c in generic.criteria]
    own = Rubric(
        criteria=[{"name": "tone", "description": "Polite."}], scale={1: "rude", 5: "kind"}
    )
    (tone,) = graded_criteria("math", own)
    assert tone.name == "tone" and tone.description.startswith("Polite.")
