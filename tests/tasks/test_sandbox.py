"""The bounds of the template sandbox: each construct that could make a huge value, or loop
or recurse without end, is refused before it allocates or runs long; ordinary templates
render as Jinja renders them."""

from __future__ import annotations

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from potstill.tasks.sandbox import (
    MAX_SECONDS,
    MAX_STEPS,
    BoundedEnvironment,
    TemplateLimit,
    guard,
    render_budget,
)

ENV = BoundedEnvironment()


def render(text: str, **context: object) -> str:
    with render_budget():
        return ENV.from_string(guard(ENV.parse(text))).render(**context)


BIG = 10_000_000_000
HUGE = {
    "string repetition": "{{ 'A' * 10000000000 }}",
    "repetition, count first": "{{ 10000000000 * 'A' }}",
    "list repetition": "{{ [1, 2] * 10000000000 }}",
    "a power": "{{ 10 ** 100000000 }}",
    "squaring a number": (
        "{% set ns = namespace(x=10 ** 3000) %}{% for i in range(40) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}"
    ),
    "doubling with ~": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    ),
    "doubling with +": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}"
    ),
    "doubling in a set block": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
        "{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}"
    ),
    "doubling with replace": (
        "{% set ns = namespace(s='aaaa') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s | replace('a', 'aa') %}{% endfor %}"
    ),
    "the center filter": "{{ 'a' | center(10000000000) }}",
    "the indent filter": "{{ 'a\nb' | indent(10000000000) }}",
    "str.ljust": "{{ 'a'.ljust(10000000000) }}",
    "str.zfill": "{{ '1'.zfill(10000000000) }}",
    "str.format width": "{{ '{:>10000000000}'.format(1) }}",
    "% width": "{{ '%10000000000s' % 'a' }}",
    "% star width": "{{ '%*s' % (10000000000, 'a') }}",
    "the format filter": "{{ '%10000000000s' | format('a') }}",
    "output of a loop": "{% for i in range(2000) %}{{ 'A' * 9000000 }}{% endfor %}",
}


@pytest.mark.parametrize("name", HUGE)
def test_a_huge_value_is_refused_before_it_is_made(name: str) -> None:
    with pytest.raises(TemplateLimit, match=r"a prompt may (hold|use)|is not allowed in a prompt"):
        render(HUGE[name])


ENDLESS = {
    "nested range loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "loops over a string": "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "a macro that calls itself twice": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    ),
}


@pytest.mark.parametrize("name", ENDLESS)
def test_endless_work_is_cut_at_the_step_bound(name: str) -> None:
    # Whichever bound comes first: the steps, or the time on a loaded machine.
    bounds = f"more than {MAX_STEPS:,} loop iterations|took more than {MAX_SECONDS:g} s"
    with pytest.raises(TemplateLimit, match=bounds):
        render(ENDLESS[name], s="x" * 50_000)


def test_each_render_gets_its_own_budget() -> None:
    # 150,000 steps each time: three renders together pass the bound, each alone does not
    text = "{% for i in range(100000) %}{% endfor %}{% for i in range(50000) %}{% endfor %}done"
    assert [render(text) for _ in range(3)] == ["done"] * 3


def test_ordinary_templates_render_as_jinja_renders_them() -> None:
    plain = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    text = (
        "{{ q }} {% for x in items %}{{ loop.index }}:{{ x ~ '!' }} {% endfor %}"
        "{{ 'ab' * 3 }} {{ '%5s|' % 'a' }} {{ 'x' | center(7) }}|{{ '{:>4}'.format(7) }} "
        "{{ items | join('/') }} {{ 2 ** 10 }} {{ q | replace('?', '!') }} {{ [1] + [2] }}"
        "{% macro m(n) %}<{{ n }}>{% endmacro %}{{ m(1) }}"
        "{% set block %}{{ q }}{{ q }}{% endset %}{{ block | length }} {{ q.upper() }}"
    )
    context = {"q": "Why?", "items": ["a", "b", "c"]}
    assert render(text, **context) == plain.from_string(text).render(**context)


def test_lipsum_is_not_offered() -> None:
    assert "lipsum" not in ENV.globals
