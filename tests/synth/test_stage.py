from potstill.config import parse_config
from potstill.synth.stage import rejection_reason, training_row
from potstill.tasks import Example, build_task

CONFIG = parse_config(
    {
        "name": "t",
        "task": {"kind": "math", "calculator": True},
        "dataset": {"path": "x.jsonl"},
        "synth": {"prompt": {"style": "zero_shot"}},
    },
    "t.yaml",
)
TASK = build_task(CONFIG.task)
EXAMPLE = Example("e1", {"question": "Tom has 22 stickers and gives away 9."}, "13")


def _reason(
    reply: str, finish: str = "stop", error: str | None = None, config=CONFIG
) -> str | None:  # type: ignore[no-untyped-def]
    return rejection_reason(TASK.parse(reply, "cot"), finish, error, EXAMPLE, TASK, config)


def test_rejection_reasons() -> None:
    assert _reason('{"reason": "gives away", "answer": "22 - 9"}') is None
    assert _reason('{"reason": "adds", "answer": "22 + 9"}') == "disagrees_with_reference"
    assert _reason('{"reason": "adds", "answer": ') == "malformed"
    assert _reason("no idea") == "no_answer"
    assert _reason('{"answer": "22 - 9"}', finish="length") == "finish_length"
    assert _reason("", error="boom") == "call_failed"


def test_reference_check_can_be_switched_off_and_rationale_required() -> None:
    lenient = CONFIG.model_copy(
        update={"synth": CONFIG.synth.model_copy(update={"require_reference_match": False})}
    )
    assert _reason('{"reason": "adds", "answer": "22 + 9"}', config=lenient) is None
    rationale = CONFIG.model_copy(
        update={"synth": CONFIG.synth.model_copy(update={"target": "rationale_answer"})}
    )
    assert _reason('{"answer": "22 - 9"}', config=rationale) == "no_rationale"


def test_training_row_keeps_the_teachers_expression_and_drops_the_reason() -> None:
    parsed = TASK.parse('{"reason": "gives away, so subtract", "answer": "22 - 9"}', "cot")
    row = training_row(TASK, CONFIG, EXAMPLE, parsed)
    assert row["completion"] == [{"role": "assistant", "content": "22 - 9"}]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["prompt"][-1]["content"] == EXAMPLE.inputs["question"]
    with_reason = CONFIG.model_copy(
        update={"synth": CONFIG.synth.model_copy(update={"target": "rationale_answer"})}
    )
    content = training_row(TASK, with_reason, EXAMPLE, parsed)["completion"][0]["content"]
    assert TASK.parse(content, "cot").rationale == "gives away, so subtract"
