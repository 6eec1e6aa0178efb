from potstill.config import SynthConfig, TaskConfig
from potstill.synth.filters import length_reason, screen_inputs
from potstill.tasks import Example, build_task

TASK = build_task(TaskConfig(kind="math"))


def ex(key: str, question: str) -> Example:
    return Example(key, {"question": question}, None)


TEST = [ex("t1", "A baker makes 48 rolls and sells 17 of them in the morning. How many are left?")]


def test_inputs_are_screened_for_contamination_and_duplicates_before_any_call() -> None:
    train = [
        ex("a", "Mia has 9 shells and finds 4 more shells on the beach. How many shells now?"),
        ex("b", "A baker makes 48 rolls and sells 17 of them in the morning. How many are left?"),
        ex("c", "mia has 9 shells, and finds 4 more shells on the beach; how many shells now"),
        ex("d", "Leo reads 12 pages a day for 5 days. How many pages does he read?"),
    ]
    generated = [
        ex("a~gen0", "Mia has 9 shells and finds 4 more shells on the beach. How many shells now?"),
        ex("a~gen1", "Mia has 9 shells and finds 4 more shells on the sand. How many shells now?"),
        ex("d~gen0", "A farmer plants 6 rows of 8 trees each. How many trees are planted?"),
    ]
    found = screen_inputs(TASK, SynthConfig(near_duplicate_threshold=0.6), train, generated, TEST)
    assert {k: v[0] for k, v in found.items()} == {
        "b": "contamination",
        "c": "duplicate",
        "a~gen0": "duplicate",
        "a~gen1": "near_duplicate",
    }
    assert found["b"][1] == "100% of its 8-grams in t1"
    assert found["c"][1] == "same words as a"
    assert found["a~gen1"][1].endswith("with a")


def test_near_duplicates_among_training_inputs_are_kept() -> None:
    # Only exact duplicates of the training split are dropped; similar originals are data.
    train = [
        ex("a", "Mia has 9 shells and finds 4 more shells on the beach. How many shells now?"),
        ex("b", "Mia has 9 shells and finds 5 more shells on the beach. How many shells now?"),
    ]
    assert screen_inputs(TASK, SynthConfig(near_duplicate_threshold=0.5), train, [], TEST) == {}


def test_length_bounds_on_the_training_completion() -> None:
    config = SynthConfig(min_completion_chars=3, max_completion_chars=10)
    assert length_reason("12", config) == "too_short"
    assert length_reason("12 + 30", config) is None
    assert length_reason("12 + 30 + 400", config) == "too_long"
    assert length_reason("", SynthConfig()) is None
