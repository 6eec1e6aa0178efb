import pytest

from potstill.tasks.replies import calculate, parse_number, split_reply


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("13", 13.0),
        ("$1,000.00", 1000.0),
        ("13 apples", 13.0),
        ("Answer: 7.", 7.0),
        ("-4.5", -4.5),
        ("The answer is 12", 12.0),
        ("12 toy cars.", 12.0),
    ],
)
def test_parse_number_accepts(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "twelve", "about 12 or 13", "12 + 3", "x = 4"])
def test_parse_number_refuses_to_guess(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("22 - 9", 13.0),
        ("22 - 9 = 15", 13.0),
        ("(3 + 4) * 2", 14.0),
        ("24 / 6", 4.0),
        ("4 x 6", 24.0),
        ("1,200 + 5", 1205.0),
    ],
)
def test_calculator(text: str, value: float) -> None:
    assert calculate(text) == value


@pytest.mark.parametrize("text", ["__import__('os')", "2 ** 99999", "1 / 0", "abc", "9 -"])
def test_calculator_refuses_anything_but_arithmetic(text: str) -> None:
    assert calculate(text) is None


def test_split_reply_finds_json_in_fences_and_prose() -> None:
    reply = 'Sure! Here it is:\n```json\n{"reason": "22 take 9", "answer": "13"}\n```\nDone.'
    parts = split_reply(reply)
    assert (parts.answer, parts.rationale, parts.json_error) == ("13", "22 take 9", None)
    parts = split_reply('I think {"answer": 5, "reason": "a {brace} in text"} is right')
    assert parts.answer == 5 and parts.rationale == "a {brace} in text"


def test_split_reply_marks_torn_json() -> None:
    parts = split_reply('{"reason": "counting", "answer": ')
    assert parts.found_json and parts.json_error
    assert not split_reply("just 13").found_json
