import json

import pytest

from potstill.config import PromptConfig, TaskConfig
from potstill.tasks import Example, Parsed, build_task

TASK = build_task(TaskConfig(kind="summarization", summary_words=40, density_rounds=2))
ROUNDS = [
    {"missing_entities": "council", "denser_summary": "A council approved a park."},
    {"missing_entities": "Oslo", "denser_summary": "Oslo's council approved a harbour park."},
]


def test_chain_of_density_keeps_the_last_summary_and_the_rounds_apart() -> None:
    parsed = TASK.parse(json.dumps(ROUNDS), "chain_of_density")
    assert parsed.answer == "Oslo's council approved a harbour park."
    earlier = json.loads(parsed.rationale or "")
    assert earlier == [ROUNDS[0], {"missing_entities": "Oslo"}]
    # the training target in the same style rebuilds the rounds the teacher wrote
    rebuilt = TASK.reply_text(parsed.answer or "", parsed.rationale, "chain_of_density")
    assert json.loads(rebuilt) == ROUNDS
    assert TASK.reply_text(parsed.answer or "", None, "zero_shot") == parsed.answer


def test_the_chain_of_density_prompt_asks_for_rounds_of_json() -> None:
    system = TASK.messages({"document": "Text."}, PromptConfig(style="chain_of_density"))[0]
    assert "2 rounds" in system["content"] and '"denser_summary"' in system["content"]
    assert "about 40 words" in system["content"]


def test_flexible_reading_recovers_the_last_summary_of_a_torn_reply() -> None:
    torn = json.dumps(ROUNDS)[:-30]
    assert TASK.parse(torn, "chain_of_density").status == "malformed"
    assert TASK.parse_flexible(torn, "chain_of_density").answer == "A council approved a park."
    odd = '[{"denser_summary": "Fine."}, {"denser_summary": "Bad \\q escape"}'
    assert TASK.parse_flexible(odd, "chain_of_density").answer == "Fine."


def test_open_text_metrics_per_example() -> None:
    reference = "The Oslo city council approved a new park by the harbour."
    examples = [Example("a", {"document": "d"}, reference), Example("b", {"document": "d"}, None)]
    parsed = [
        Parsed("ok", "Oslo's council approved a new harbour park."),
        Parsed("ok", "Nothing to compare with."),
    ]
    first, second = TASK.example_scores(parsed, examples)
    assert set(first) == {
        "rouge1",
        "rouge2",
        "rougeL",
        "embedding_similarity",
        "length",
        "entity_density",
    }
    assert 0.3 < first["rougeL"] < 1.0 and first["embedding_similarity"] > 0.6
    assert first["length"] == 7.0
    assert set(second) == {"length", "entity_density"}  # no reference: nothing to compare
    unusable = TASK.example_scores([Parsed("no_answer")], examples[:1])[0]
    assert unusable == {"rouge1": 0, "rouge2": 0, "rougeL": 0, "embedding_similarity": 0}
    assert TASK.score(parsed[0], reference) == pytest.approx(first["rougeL"])
