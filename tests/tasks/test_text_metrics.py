import pytest

from potstill.tasks.embedding import similarity
from potstill.tasks.text_metrics import entities, entity_density, rouge, word_count


def test_rouge_is_the_rouge_score_package() -> None:
    scores = rouge("the cat sat on the mat", "the cat sat on the mat")
    assert scores == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    partial = rouge("the cat sat", "the cat sat on the mat")
    assert partial["rouge1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_entities_are_capitalised_runs_and_numbers_not_sentence_starts() -> None:
    text = "The New York council met on 12 May. It voted for Ada Lovelace Park."
    assert entities(text) == {"new york", "12", "may", "ada lovelace park"}
    assert word_count(text) == 14
    assert entity_density(text) == pytest.approx(4 / 14)
    assert entity_density("") == 0.0


def test_embedding_similarity_runs_offline_and_ranks_meaning() -> None:
    same, unrelated = similarity(
        ["A cat is sleeping on the sofa.", "A cat is sleeping on the sofa."],
        ["The cat naps on the couch.", "Quarterly revenue rose by four percent."],
    )
    assert same > 0.6 > unrelated
    assert similarity([], []) == []
