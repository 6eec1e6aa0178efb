from potstill.config import TaskConfig
from potstill.tasks.classification import ClassificationTask


def test_labels_match_case_insensitively_and_nothing_else() -> None:
    task = ClassificationTask(TaskConfig(kind="classification", labels=["Positive", "negative"]))
    assert task.parse("POSITIVE.", "zero_shot").answer == "Positive"
    assert task.parse('{"reason": "r", "answer": "Negative"}', "cot").answer == "negative"
    assert task.parse("The review is positive.", "zero_shot").status == "no_answer"
    assert task.parse("neutral", "zero_shot").status == "no_answer"
    assert task.score(task.parse("negative", "zero_shot"), "Negative") == 1.0
    assert task.check_reference("neutral") is not None


def test_flexible_reading_needs_exactly_one_label_named() -> None:
    task = ClassificationTask(TaskConfig(kind="classification", labels=["positive", "negative"]))
    assert task.parse_flexible("The review is positive.", "zero_shot").answer == "positive"
    assert task.parse_flexible("Not positive, rather negative.", "zero_shot").status != "ok"
    assert task.parse_flexible("Label: NEGATIVE!", "zero_shot").answer == "negative"
