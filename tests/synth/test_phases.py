"""The synth phases that the stage runs and the dry run counts, defined once."""

from potstill.config import builtin_config_path, load_config
from potstill.synth.phases import label_plan
from potstill.tasks import Example, build_task

CONFIG = load_config(
    builtin_config_path("demo"), ["synth.samples=2", "teacher.prompt.temperature=0.7"]
)
TASK = build_task(CONFIG.task)


def ex(key: str, question: str) -> Example:
    return Example(key, {"question": question}, None)


def test_the_label_plan_screens_then_asks_every_sample_and_labels_stand_ins_unscreened() -> None:
    test = [ex("t1", "A baker makes 48 rolls and sells 17 of them in the morning. How many?")]
    train = [
        ex("a", "Mia has 9 shells and finds 4 more shells on the beach. How many shells now?"),
        ex("b", "A baker makes 48 rolls and sells 17 of them in the morning. How many?"),
    ]
    generated = [ex("a~gen0", "Mia has 9 shells and finds 4 more shells on the beach. How many?")]
    stand_in = ex("a~gen1", "Mia has 9 shells and finds 4 more shells on the beach. How many?")
    plan = label_plan(TASK, CONFIG, train, generated, test, None, unscreened=[stand_in])
    # The written input that nearly repeats its seed is screened; the stand-in, the same
    # text, is not (the dry run cannot know what the teacher will write).
    assert {k: v[0] for k, v in plan.screened.items()} == {
        "b": "contamination",
        "a~gen0": "near_duplicate",
    }
    assert [e.id for e in plan.inputs] == ["a", "a~gen1"]
    assert [r.sample_index for r in plan.requests] == [0, 1] * 2
    assert plan.requests[0].messages == plan.requests[1].messages
