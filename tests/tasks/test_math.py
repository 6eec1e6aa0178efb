from potstill.config import PromptConfig, Shot, TaskConfig
from potstill.tasks.math import MathTask


def test_parse_statuses() -> None:
    task = MathTask(TaskConfig(kind="math"))
    ok = task.parse('```json\n{"reason": "9 from 22", "answer": "$1,000.00"}\n```', "cot")
    assert (ok.status, ok.answer, ok.rationale) == ("ok", "1000", "9 from 22")
    assert task.parse('{"reason": "hm"}', "cot").status == "no_answer"
    assert task.parse('{"reason": "hm", "answer": "lots"}', "cot").status == "malformed"
    assert task.parse('{"reason": "hm", "answer": ', "cot").status == "malformed"
    assert task.parse("I am not sure.", "zero_shot").status == "no_answer"
    assert task.parse("13 apples", "zero_shot").answer == "13"


def test_calculator_only_when_configured() -> None:
    plain = MathTask(TaskConfig(kind="math"))
    calc = MathTask(TaskConfig(kind="math", calculator=True))
    assert plain.parse("22 - 9", "zero_shot").status == "no_answer"
    parsed = calc.parse('{"answer": "22 - 9 = 15"}', "cot")
    assert (parsed.status, parsed.answer, parsed.raw_answer) == ("ok", "13", "22 - 9 = 15")


def test_score_compares_numbers() -> None:
    task = MathTask(TaskConfig(kind="math"))
    assert task.score(task.parse("13.0", "zero_shot"), "13") == 1.0
    assert task.score(task.parse("14", "zero_shot"), "13") == 0.0
    assert task.score(task.parse("nothing", "zero_shot"), "13") == 0.0


def test_messages_put_shots_before_the_input() -> None:
    task = MathTask(TaskConfig(kind="math", calculator=True))
    prompt = PromptConfig(
        style="cot", shots=[Shot(inputs={"question": "Q1"}, answer="1 + 1", reason="add")]
    )
    messages = task.messages({"question": "Q2"}, prompt)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == '{"reason": "add", "answer": "1 + 1"}'
    assert messages[-1]["content"] == "Q2"
    assert "JSON" in messages[0]["content"] and "expression" in messages[0]["content"]


def test_flexible_reading_finds_answers_in_prose_but_strict_does_not() -> None:
    calc = MathTask(TaskConfig(kind="math", calculator=True))
    reply = "Ben bought 56 flowers and used 44 of them, so he used 56 - 44 = 10"
    assert calc.parse(reply, "zero_shot").status == "no_answer"
    assert calc.parse_flexible(reply, "zero_shot").answer == "12"
    plain = MathTask(TaskConfig(kind="math"))
    assert plain.parse_flexible("So she has 8 x 10 = 80 apples.", "zero_shot").answer == "80"
    assert plain.parse_flexible("I cannot tell.", "zero_shot").status == "no_answer"


def test_fractions_decimals_negatives_and_tolerance() -> None:
    task = MathTask(TaskConfig(kind="math"))
    assert task.check_reference("-3/4") is None and task.check_reference("many") is not None
    assert task.score(task.parse("\\boxed{-0.75}", "zero_shot"), "-3/4") == 1.0
    assert task.score(task.parse("0.33", "zero_shot"), "1/3") == 0.0
    loose = MathTask(TaskConfig(kind="math", tolerance=0.01))
    assert loose.score(loose.parse("0.33", "zero_shot"), "1/3") == 1.0
    assert loose.score(loose.parse("#### 101", "zero_shot"), "100") == 1.0
    assert loose.score(loose.parse("#### 102", "zero_shot"), "100") == 0.0
