import json

import pytest

from potstill.config import PromptConfig, TaskConfig
from potstill.tasks import build_task
from potstill.tasks.conversation import parse_history

TASK = build_task(TaskConfig(kind="conversation", description="You are a travel agent."))


def test_earlier_turns_come_between_the_system_message_and_the_new_turn() -> None:
    history = json.dumps(["I want to go to Oslo.", "When would you like to travel?"])
    messages = TASK.messages({"message": "In May.", "history": history}, PromptConfig())
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", "You are a travel agent."),
        ("user", "I want to go to Oslo."),
        ("assistant", "When would you like to travel?"),
        ("user", "In May."),
    ]
    assert len(TASK.messages({"message": "Hi"}, PromptConfig())) == 2


def test_history_problems_are_named() -> None:
    with pytest.raises(ValueError, match="last earlier turn must be the assistant's"):
        parse_history(json.dumps(["only a user turn"]))
    assert TASK.check_inputs({"message": "m", "history": "not json"}) == (
        "history",
        "not a JSON list of turns (Expecting value)",
    )


def test_a_leaked_chat_template_is_malformed_but_flexibly_readable() -> None:
    reply = "Oslo is lovely in May.<|im_end|>\n<|im_start|>user\nThanks"
    assert TASK.parse(reply, "zero_shot").status == "malformed"
    assert TASK.parse_flexible(reply, "zero_shot").answer == "Oslo is lovely in May."
