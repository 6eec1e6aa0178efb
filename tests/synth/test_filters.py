from potstill.config import SynthConfig, TaskConfig
from potstill.synth.filters import length_reason, screen_inputs, shot_overlaps
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
    assert found["b"][1] == "100.0% of its 8-grams in t1"
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


def test_training_inputs_that_repeat_a_transfer_example_are_dropped_too() -> None:
    train = [
        ex("a", "By how much does 305 exceed 168?"),
        ex("b", "Leo reads 12 pages a day for 5 days. How many pages does he read?"),
    ]
    transfer = {"rephrased": [ex("t1", "By how much does 305 exceed 168?")]}
    found = screen_inputs(TASK, SynthConfig(), train, [], TEST, transfer)
    # Keyed as <set>/<id>: a transfer example's id may repeat a test example's.
    assert found == {"a": ("contamination", "100.0% of its 8-grams in rephrased/t1")}


def test_a_worked_example_that_repeats_an_evaluation_example_is_named_with_it() -> None:
    sets = {
        "test": TEST,
        "transfer set 'rephrased'": [ex("r1", "What number of oranges remain when 17 of 52 go?")],
    }
    shots = [
        ("teacher.prompt.shots.0", {"question": "Tim has 9 pens and buys 4 more. How many?"}),
        # The same words as the test example, in other case and punctuation.
        ("teacher.prompt.shots.1", {"question": TEST[0].inputs["question"].upper() + "!"}),
        # All of its 8-grams inside one transfer example: a near copy.
        ("synth.prompt.shots.0", {"question": "What number of oranges remain when 17 of 52"}),
        # One word changed in a long input: word 3-gram Jaccard above the threshold.
        (
            "evaluate.candidates.0.prompt.shots.0",
            {"question": TEST[0].inputs["question"].replace("morning", "evening")},
        ),
    ]
    found = shot_overlaps(TASK, SynthConfig(near_duplicate_threshold=0.6), shots, sets)
    assert len(found) == 3
    assert found[0].startswith("teacher.prompt.shots.1 ('A BAKER MAKES 48 ROLLS")
    assert found[0].endswith("has the same words as test example 't1'")
    assert found[1].startswith("synth.prompt.shots.0 (")
    assert (
        "nearly repeats transfer set 'rephrased' example 'r1' (100.0% of its word 8-grams"
        in (found[1])
    )
    assert found[2].startswith("evaluate.candidates.0.prompt.shots.0")
    assert "nearly repeats test example 't1' (" in found[2]
