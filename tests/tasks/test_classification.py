import pytest

from potstill.config import PromptConfig, TaskConfig
from potstill.tasks import Example, Parsed
from potstill.tasks.classification import ClassificationTask, label_table, macro_f1


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


def test_configured_synonyms_and_their_conflicts() -> None:
    config = TaskConfig(
        kind="classification",
        labels=["positive", "negative"],
        synonyms={"positive": ["good", "Thumbs  Up"], "negative": ["bad"]},
    )
    task = ClassificationTask(config)
    assert task.parse("thumbs up", "zero_shot").answer == "positive"
    assert task.parse('{"answer": "BAD"}', "cot").answer == "negative"
    with pytest.raises(ValueError, match="'good' of 'negative' already names 'positive'"):
        label_table(["positive", "negative"], {"positive": ["good"], "negative": ["good"]})


def test_nli_preset_inputs_prompt_and_labels() -> None:
    task = ClassificationTask(TaskConfig(kind="classification", preset="nli"))
    assert task.input_fields == ("premise", "hypothesis")
    assert task.labels == ["entailment", "neutral", "contradiction"]
    messages = task.messages(
        {"premise": "A man sleeps.", "hypothesis": "A man runs."}, PromptConfig(style="cot")
    )
    assert messages[-1]["content"] == "Premise: A man sleeps.\nHypothesis: A man runs."
    assert "entailment, neutral, contradiction" in messages[0]["content"]
    assert '{"reason": "<your reasoning>", "answer": "<label>"}' in messages[0]["content"]


def test_macro_f1_counts_no_answer_as_wrong() -> None:
    assert macro_f1(["a", "b", "a"], ["a", "b", "a"]) == 1.0
    # label a: tp 1, fn 1 -> 2/3; label b: tp 1 -> 1.0
    assert macro_f1(["a", None, "b"], ["a", "a", "b"]) == pytest.approx((2 / 3 + 1.0) / 2)
    # label a: tp 0 fp 1 fn 1 -> 0; label b: tp 0 fp 1 fn 1 -> 0
    assert macro_f1(["b", "a"], ["a", "b"]) == 0.0


def test_corpus_metrics_and_confusion_matrix() -> None:
    task = ClassificationTask(TaskConfig(kind="classification", labels=["pos", "neg"]))
    examples = [Example(str(i), {"text": "t"}, ref) for i, ref in enumerate(["pos", "pos", "neg"])]
    parsed = [Parsed("ok", "pos"), Parsed("no_answer"), Parsed("ok", "pos")]
    assert [s["accuracy"] for s in task.example_scores(parsed, examples)] == [1.0, 0.0, 0.0]
    # pos: tp 1, fp 1, fn 1 -> 0.5; neg: tp 0, fn 1 -> 0
    assert task.corpus_scores(parsed, examples) == {"macro_f1": pytest.approx(0.25)}
    confusion = task.details(parsed, examples)["confusion"]
    assert confusion["columns"] == ["pos", "neg", "no answer"]
    assert confusion["matrix"] == [[1, 0, 1], [1, 0, 0]]


def test_synonyms_must_name_labels_and_a_preset_keeps_only_its_labels_synonyms() -> None:
    from potstill.config import ConfigError

    bad = TaskConfig(kind="classification", preset="nli", synonyms={"entailmen": ["yes"]})
    with pytest.raises(ConfigError, match=r"task.synonyms: \['entailmen'\] not among"):
        ClassificationTask(bad)
    clash = TaskConfig(kind="classification", labels=["a", "b"], synonyms={"a": ["b"]})
    with pytest.raises(ConfigError, match=r"task\.synonyms: synonym 'b' of 'a' already names 'b'"):
        ClassificationTask(clash)
    two = ClassificationTask(TaskConfig(kind="classification", preset="nli", labels=["yes", "no"]))
    assert two.parse("yes", "zero_shot").answer == "yes"
    assert two.parse("entails", "zero_shot").status == "no_answer"  # not a label here
