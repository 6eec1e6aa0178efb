import json

from potstill.config import GenerateConfig, TaskConfig
from potstill.synth.generate import generation_calls, parse_generated
from potstill.tasks import Example, build_task

TASK = build_task(TaskConfig(kind="math"))
TRAIN = [
    Example(f"q{i}", {"question": f"Sam has {i} pens. How many pens?"}, str(i)) for i in range(4)
]


def test_each_seed_asks_for_per_seed_inputs_with_the_variations_in_turn() -> None:
    config = GenerateConfig(per_seed=3, seeds=2, examples_per_prompt=2, variations=["A", "B"])
    calls = generation_calls(TASK, config, TRAIN)
    assert [c.id for c in calls] == [f"q{s}~gen{j}" for s in range(2) for j in range(3)]
    texts = [c.request.messages[-1]["content"] for c in calls]
    assert [("Write one new input, A" in t) for t in texts] == [
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    # The seed and the example after it are shown, as JSON with the task's input fields.
    assert json.dumps(TRAIN[1].inputs) in texts[3] and json.dumps(TRAIN[2].inputs) in texts[3]
    assert json.dumps(TRAIN[0].inputs) not in texts[3]
    assert '{"question": "<the new question>"}' in texts[0]
    assert [c.request.sample_index for c in calls[:3]] == [0, 1, 2]
    assert len({(json.dumps(c.request.messages), c.request.sample_index) for c in calls}) == 6


def test_a_template_replaces_the_instruction() -> None:
    config = GenerateConfig(template="New one ({variation}) like:\n{examples}\nas {format}")
    (first, *_) = generation_calls(TASK, config, TRAIN)
    assert first.request.messages[-1]["content"].startswith("New one (similar in difficulty")


def test_new_inputs_are_read_strictly() -> None:
    config = GenerateConfig(min_chars=10, max_chars=80)
    good = 'Here it is: {"question": "Ann has 4 cats. How many legs?"} Hope it helps.'
    assert parse_generated(TASK, config, good) == (
        {"question": "Ann has 4 cats. How many legs?"},
        None,
    )
    fenced = '```json\n{"question": "  Ann has 5 dogs. How many ears?  "}\n```'
    assert parse_generated(TASK, config, fenced)[0] == {
        "question": "Ann has 5 dogs. How many ears?"
    }
    assert parse_generated(TASK, config, "Ann has 4 cats. How many legs?") == (
        None,
        "unparsable_input",
    )
    assert parse_generated(TASK, config, '{"text": "wrong field"}') == (None, "unparsable_input")
    assert parse_generated(TASK, config, '{"question": ""}') == (None, "unparsable_input")
    assert parse_generated(TASK, config, '{"question": "Short?"}') == (None, "input_length")
    assert parse_generated(TASK, config, json.dumps({"question": "x" * 81})) == (
        None,
        "input_length",
    )
