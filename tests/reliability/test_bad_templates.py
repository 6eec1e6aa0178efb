"""Prompt templates that could hurt, through `potstill run`: each is refused with exit code 2
and one message naming the template's key, before a run folder is written (`refused` in
conftest.py checks that and counts the input)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

UNSET_KEY = "POTSTILL_TEST_KEY_NEVER_SET"  # never set; see conftest.py
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
# name -> (task.templates, the message's start, a fragment of the reason)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "include": ({"user": "{% include 'x.txt' %}"}, "task.templates.user: {% include %}", ""),
    "import": (
        {"user": "{% import 'm.j2' as m %}{{ text }}"},
        "task.templates.user: {% import %}",
        "",
    ),
    "extends": (
        {"cot": {"system": "{% extends 'base.j2' %}"}},
        "task.templates.cot.system: {% extends %}",
        "",
    ),
    "huge repetition": (
        {"user": "{{ 'A' * 10000000000 }}"},
        "task.templates.user: the template failed to render",
        "repetition would make a value of 10,000,000,000 characters",
    ),
    "recursive macro": (
        {"cot": {"user": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"}},
        "task.templates.cot.user: the template failed to render",
        "recursion too deep",
    ),
    "nested range loops": (
        {"system": NESTED_LOOPS},
        "task.templates.system: the template failed to render",
        "more than 200,000 loop iterations",
    ),
    "fails on a later row": (  # the first rows are rendered, not only the first
        {"user": "{{ text if text != 'Too loud.' else 1 / 0 }}"},
        "task.templates.user: the template failed to render",
        "ZeroDivisionError",
    ),
}


def _config(tmp: Path, templates: dict[str, Any]) -> Path:
    data = tmp / "reviews.jsonl"
    rows = [("Works great.", "positive"), ("Too loud.", "negative"), ("Lovely.", "positive")]
    rows += [("Broke at once.", "negative")]
    data.write_text("".join(json.dumps({"review": t, "label": a}) + "\n" for t, a in rows))
    tree = {
        "name": "bad-template",
        "task": {"kind": "classification", "labels": ["positive", "negative"]},
        "dataset": {"path": str(data), "fields": {"text": "review"}, "test_size": 1},
        "teacher": {
            "model": {"backend": "openai", "model": "never-called", "api_key_env": UNSET_KEY},
            "prompt": {"style": "cot"},
        },
    }
    tree["task"]["templates"] = templates
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_template_that_could_hurt_is_refused_naming_its_key(
    refused: Any, tmp_path: Path, case: str
) -> None:
    templates, start, reason = CASES[case]
    config = _config(tmp_path, templates)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs)]
    message = refused(args, runs, [start, reason], f"template: {case}")
    assert message.startswith(f"error: {start}"), message


# Pieces of templates, harmless and harmful, that hypothesis strings together at random.
FRAGMENTS = [
    "Review: ",
    "{{ text }}",
    "{{ inputs['text'] | upper }}",
    "{{ description }} {{ answer_format }}",
    "{% if text %}",
    "{% endif %}",
    "{% for i in range(100000) %}",
    "{% for c in text %}",
    "{% endfor %}",
    "{{ 'A' * 10000000000 }}",
    "{{ text * 10000000 }}",
    "{{ 10 ** 100000000 }}",
    "{{ 'a' | center(10000000000) }}",
    "{{ '%*s' % (10000000000, 'a') }}",
    "{{ '{:>10000000000}'.format(1) }}",
    "{% set ns = namespace(s='ab') %}",
    "{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}",
    "{% macro g(n) %}{% if n %}{{ g(n - 1) }}{{ g(n - 1) }}{% endif %}{% endmacro %}",
    "{{ f(1) }}",
    "{{ g(40) }}",
    "{% include 'x.txt' %}",
    "{% import 'm.j2' as m %}",
    "{% extends 'base.j2' %}",
    "{{ 1 / 0 }}",
    "{{ range(10 ** 9) | list }}",
    "{{ lipsum(100000000) }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ text.ljust(10000000000) }}",
    "{{ no_such_variable }}",
    "{{",
    "}}",
    "{% raw %}",
]
TEMPLATE_KEYS = ["user", "system", "cot.user", "cot.system", "zero_shot.user"]


@given(
    pieces=st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=10), min_size=1, max_size=6),
    key=st.sampled_from(TEMPLATE_KEYS),
)
def test_any_template_is_refused_naming_its_key_or_reaches_the_key_check(
    refused: Any, pieces: list[str], key: str
) -> None:
    text = "".join(pieces)
    assume(text.strip())
    templates: dict[str, Any] = {}
    style, _, part = key.rpartition(".")
    (templates.setdefault(style, {}) if style else templates)[part] = text
    with tempfile.TemporaryDirectory(prefix="potstill-bad-template-") as tmp:
        config = _config(Path(tmp), templates)
        runs = Path(tmp) / "runs"
        args = ["run", str(config), "--runs-dir", str(runs)]
        message = refused(args, runs, [], "template: random pieces")
        # The template's key, or (a template that renders) the unset API-key variable
        assert f"task.templates.{key}: " in message or UNSET_KEY in message, message
