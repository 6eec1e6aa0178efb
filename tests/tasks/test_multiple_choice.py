import json

from potstill.config import PromptConfig, TaskConfig
from potstill.tasks import build_task
from potstill.tasks.multiple_choice import parse_options

TASK = build_task(TaskConfig(kind="multiple_choice"))
INPUTS = {"question": "Capital of Italy?", "options": json.dumps(["Paris", "Rome", "Oslo"])}


def test_options_come_as_a_json_list_or_one_per_line() -> None:
    assert parse_options('["x", "y"]') == ["x", "y"]
    assert parse_options("A) x\nB) y\n\n(C) z") == ["x", "y", "z"]


def test_the_prompt_letters_the_options() -> None:
    messages = TASK.messages(INPUTS, PromptConfig())
    assert messages[-1]["content"] == "Capital of Italy?\n\nA) Paris\nB) Rome\nC) Oslo"
    assert messages[0]["content"].endswith("Reply with only the letter of the correct option.")


def test_references_and_answers_meet_as_letters() -> None:
    assert TASK.check_reference("Rome", INPUTS) is None
    assert TASK.canonical_reference("Rome", INPUTS) == "B"
    assert TASK.check_reference("D", INPUTS) == "'D' is not a letter A-C"
    parsed = TASK.parse("The answer is (b).", "zero_shot", INPUTS)
    assert TASK.score(parsed, "B") == 1.0 and TASK.score(parsed, "C") == 0.0


def test_flexible_reading_finds_one_letter_or_one_option_text() -> None:
    reply = "Rome has been the capital since 1871, so option B."
    assert TASK.parse(reply, "zero_shot", INPUTS).status == "no_answer"
    assert TASK.parse_flexible(reply, "zero_shot", INPUTS).answer == "B"
    assert TASK.parse_flexible("It is Rome.", "zero_shot", INPUTS).answer == "B"
    assert TASK.parse_flexible("Paris or Rome?", "zero_shot", INPUTS).status == "no_answer"
