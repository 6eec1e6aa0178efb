import pytest

from potstill.config import ConfigError, PromptConfig, Shot, TaskConfig, parse_config
from potstill.tasks import build_task


def test_user_and_system_templates_are_overridable() -> None:
    config = TaskConfig(
        kind="classification",
        preset="nli",
        templates={
            "user": "P: {{ premise }} | H: {{ inputs['hypothesis'] }}",
            "cot": {"system": "NLI expert. Labels: {{ labels | join('/') }}. {{ answer_format }}"},
        },
    )
    task = build_task(config)
    inputs = {"premise": "It rains.", "hypothesis": "It is wet."}
    cot = task.messages(inputs, PromptConfig(style="cot"))
    assert cot[0]["content"].startswith("NLI expert. Labels: entailment/neutral/contradiction.")
    assert "JSON" in cot[0]["content"]
    assert cot[-1]["content"] == "P: It rains. | H: It is wet."
    plain = task.messages(inputs, PromptConfig(style="zero_shot"))
    assert plain[0]["content"].startswith("Decide whether the premise entails")  # the default


def test_worked_examples_go_through_the_user_template() -> None:
    task = build_task(TaskConfig(kind="math", templates={"user": "Problem: {{ question }}"}))
    prompt = PromptConfig(shots=[Shot(inputs={"question": "1 + 1?"}, answer="2")])
    messages = task.messages({"question": "2 + 2?"}, prompt)
    assert [m["content"] for m in messages[1:]] == ["Problem: 1 + 1?", "2", "Problem: 2 + 2?"]


def test_an_unknown_variable_names_the_key() -> None:
    config = TaskConfig(kind="math", templates={"zero_shot": {"user": "{{ questoin }}"}})
    with pytest.raises(ConfigError, match=r"task.templates.zero_shot.user: unknown .*'questoin'"):
        build_task(config)


def test_a_template_syntax_error_names_the_key() -> None:
    tree = {
        "name": "t",
        "task": {"kind": "math", "templates": {"cot": {"system": "{% if %}"}}},
        "dataset": {"path": "x.jsonl"},
    }
    with pytest.raises(ConfigError, match=r"task.templates.cot.system: .*not a valid Jinja2"):
        parse_config(tree, "t.yaml")


def test_a_template_that_fails_to_render_names_the_key() -> None:
    task = build_task(TaskConfig(kind="math", templates={"user": "{{ inputs.question.nope() }}"}))
    with pytest.raises(ConfigError, match=r"task.templates.user: the template failed"):
        task.messages({"question": "q"}, PromptConfig())


def test_styles_must_fit_the_kind() -> None:
    base = {"name": "t", "dataset": {"path": "x.jsonl"}}
    with pytest.raises(ConfigError, match="chain_of_density is for summarization only"):
        teacher = {"prompt": {"style": "chain_of_density"}}
        parse_config({**base, "task": {"kind": "math"}, "teacher": teacher}, "t.yaml")
    with pytest.raises(ConfigError, match="conversation task is asked zero_shot"):
        parse_config({**base, "task": {"kind": "conversation"}}, "t.yaml")  # teacher: cot
