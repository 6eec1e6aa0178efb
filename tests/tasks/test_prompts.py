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


@pytest.mark.parametrize(
    ("tag", "text"),
    [
        ("include", "{% include 'secrets.txt' %}"),
        ("import", "{% import 'macros.j2' as m %}{{ inputs.question }}"),
        ("from ... import", "{% from 'macros.j2' import m %}{{ inputs.question }}"),
        ("extends", "{% extends '/etc/passwd' %}"),
    ],
)
def test_a_tag_that_reads_another_template_is_refused_at_load_naming_the_key(
    tag: str, text: str
) -> None:
    # Before: a TypeError traceback ("no loader for this environment specified") at render.
    for templates, key in (
        ({"user": text}, "task.templates.user"),
        ({"cot": {"system": text}}, "task.templates.cot.system"),
    ):
        with pytest.raises(ConfigError, match=rf"^{key}: {{% {tag} %}} \(line 1\) is not allowed"):
            build_task(TaskConfig(kind="math", templates=templates))


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("{{ 'A' * 10000000000 }}", "repetition would make a value of 10,000,000,000"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion too deep"),
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
        ("{{ range(10 ** 9) | length }}", "OverflowError"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "more than 200,000 loop iterations and calls",
        ),
    ],
    ids=["huge repetition", "recursive macro", "division by zero", "huge range", "nested loops"],
)
def test_a_template_past_the_bounds_is_a_config_error_naming_the_key(
    text: str, expect: str
) -> None:
    # Before: MemoryError, RecursionError, and 3.8 GB in 53 s for the nested loops.
    task = build_task(TaskConfig(kind="math", templates={"zero_shot": {"user": text}}))
    with pytest.raises(ConfigError, match=r"^task.templates.zero_shot.user: the template") as exc:
        task.messages({"question": "q"}, PromptConfig())
    assert expect in str(exc.value)


def test_the_protocol_defaults_live_once_in_templated_task() -> None:
    from potstill.tasks import KINDS
    from potstill.tasks.prompts import TemplatedTask

    defaults = ("check_inputs", "canonical_reference", "corpus_scores", "details")
    for kind, cls in KINDS.items():
        assert issubclass(cls, TemplatedTask), kind
        # A kind defines one of these only where it does something of its own.
        own = {name for name in defaults if name in vars(cls)}
        expected = {
            "classification": {"canonical_reference", "corpus_scores", "details"},
            "multiple_choice": {"check_inputs", "canonical_reference"},
            "conversation": {"check_inputs"},
        }
        assert own == expected.get(kind, set()), kind
    math = build_task(TaskConfig(kind="math"))
    assert math.check_inputs({"question": "2 + 2?"}) is None
    assert math.canonical_reference("4", {}) == "4"
    assert math.corpus_scores([], []) == {} and math.details([], []) == {}
