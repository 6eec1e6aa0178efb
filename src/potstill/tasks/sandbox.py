"""The Jinja2 environment prompt templates run in: Jinja's own sandbox with bounds on size and
work, so a template from a config cannot read files or exhaust memory or time.

The sandbox (`jinja2.sandbox`) already refuses unsafe attributes and calls and caps one
`range()` at 100,000 items. On top of it, here: no loader (`{% include %}`, `{% import %}`,
`{% extends %}` are refused when the template is compiled); no value a template makes may
exceed `MAX_CHARS` (repetition, `+`, `~`, padding, `replace`, format widths are sized before
they are computed, other results after), nor a product or power `MAX_INT_BITS`; and one
render may take `MAX_STEPS` loop iterations and calls and `MAX_SECONDS` at most. Exceeding a
bound raises `TemplateLimit`.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_CHARS = 10_000_000  # far past any model's context window
MAX_STEPS = 200_000  # loop iterations and calls in one render
MAX_SECONDS = 5.0  # one render
MAX_INT_BITS = 100_000  # about 30,000 digits: products and powers past it are refused
# Tags that read another template, which a prompt never needs (there is no loader).
LOADING_TAGS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
}
_LOOP_GUARD = "_potstill_counted"
_CONCAT_GUARD = "_potstill_concat"


class TemplateLimit(SecurityError):
    """A template went past a bound on size, work or time."""


class _Budget:
    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimit(f"more than {MAX_STEPS:,} loop iterations and calls in one prompt")
        if self.steps % 256 == 0 and time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering one prompt took more than {MAX_SECONDS:g} s")


_BUDGET: ContextVar[_Budget | None] = ContextVar("potstill_template_budget", default=None)


@contextmanager
def render_budget() -> Iterator[None]:
    """The bounds on work and time of one render (outside one, only sizes are bounded)."""
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _step() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.step()


def check_size(size: int, what: str = "a value") -> None:
    if size > MAX_CHARS:
        raise TemplateLimit(
            f"{what} of {size:,} characters or items, over the {MAX_CHARS:,} a prompt may hold"
        )


def _size_of(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict | set):
        check_size(len(value))
    return value


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimit(
            f"a number of about {bits:,} bits, over the {MAX_INT_BITS:,} a prompt may use"
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PRINTF_WIDTH = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: str) -> None:
    """`%` formatting: a width or precision past the bound (or given as `*`) is refused."""
    for width, precision in _PRINTF_WIDTH.findall(template):
        for number in (width, precision):
            if number == "*":
                raise TemplateLimit("a `*` width in % formatting is not allowed in a prompt")
            if number:
                check_size(int(number), "a % format width")


def _check_format(template: str) -> None:
    """`str.format`: every width in a format spec is sized; nested fields are refused."""
    for _, _, spec, _ in string.Formatter().parse(template):
        if spec and "{" in spec:
            raise TemplateLimit("a nested field in a format spec is not allowed in a prompt")
        for number in re.findall(r"\d+", spec or ""):
            check_size(int(number), "a format width")


def _check_replace(text: str, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        times = text.count(old) if old else len(text) + 1
        if _is_count(count) and count >= 0:
            times = min(times, count)
        check_size(len(text) + times * (len(new) - len(old)), "replace() would make a text")


def _check_str_method(text: str, name: str, args: tuple[Any, ...]) -> None:
    if name in ("center", "ljust", "rjust", "zfill") and args and _is_count(args[0]):
        check_size(args[0], f"{name}() would make a text")
    elif name == "expandtabs":
        tab = args[0] if args and _is_count(args[0]) else 8
        check_size(len(text) + text.count("\t") * tab, "expandtabs() would make a text")
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, *args[:3])
    elif name in ("format", "format_map"):
        _check_format(text)


def _check_call(obj: Any, args: tuple[Any, ...]) -> None:
    method = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
    owner = getattr(method, "__self__", None)
    if isinstance(owner, str):
        _check_str_method(owner, getattr(method, "__name__", ""), args)


# Filters whose output can be far larger than their input, sized before they run.
def _filter_check(name: str, args: tuple[Any, ...]) -> None:
    if name == "center" and len(args) >= 2 and _is_count(args[1]):
        check_size(args[1], "center would make a text")
    elif name == "indent" and len(args) >= 2 and _is_count(args[1]) and isinstance(args[0], str):
        check_size(len(args[0]) + args[1] * (args[0].count("\n") + 1), "indent would make a text")
    elif name == "format" and args and isinstance(args[0], str):
        _check_printf(args[0])
    elif name == "replace" and len(args) >= 4 and isinstance(args[1], str):
        _check_replace(args[1], *args[2:5])  # args[0] is the eval context


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)  # keeps jinja's pass_context / pass_eval_context marker
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        _filter_check(name, args)
        return _size_of(func(*args, **kwargs))

    return bounded


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A `{% for %}` loop's items, each one a step of the render's budget."""
    for item in iterable:
        _step()
        yield item


def _concat(*parts: Any) -> str:
    """`a ~ b`: sized before it is joined."""
    texts = [str(p) for p in parts]
    check_size(sum(len(t) for t in texts), "`~` would make a text")
    return "".join(texts)


def _bounded_join(parts: Iterable[str]) -> str:
    """The output of a render, a macro or a `{% set %}` block, sized as it is joined."""
    texts, size = [], 0
    for text in parts:  # a render's output comes as a generator: stop as soon as it is too long
        size += len(text)
        check_size(size, "the output")
        texts.append(text)
    return "".join(texts)


class BoundedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox, with no loader and the bounds of this module."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(_bounded_join)

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.globals.pop("lipsum", None)  # lipsum(n) makes n paragraphs of text
        self.globals[_LOOP_GUARD] = _counted
        self.globals[_CONCAT_GUARD] = _concat
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "*" and _is_count(left) and _is_count(right):
            _check_bits(left.bit_length() + right.bit_length())
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and _is_count(times):
                    check_size(len(seq) * times, "repetition would make a value")
        elif operator == "**" and _is_count(left) and _is_count(right) and abs(left) > 1:
            _check_bits(right * left.bit_length())
        elif operator == "+" and isinstance(left, str | list | tuple):
            if isinstance(right, str | list | tuple):
                check_size(len(left) + len(right), "`+` would make a value")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        _check_call(__obj, args)
        return _size_of(super().call(__context, __obj, *args, **kwargs))


class _Guard(NodeTransformer):
    """Each loop iteration becomes a step of the render's budget, and `~` is sized."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(_LOOP_GUARD, [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(_CONCAT_GUARD, node.nodes, node.lineno)


def _call(name: str, args: list[Any], lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.Name(name, "load"), args, [], None, None)
    call.set_lineno(lineno)
    return call


def guard(tree: nodes.Template) -> nodes.Template:
    """The parsed template with its loops counted and its `~` sized (see `_Guard`)."""
    guarded = _Guard().visit(tree)
    assert isinstance(guarded, nodes.Template)
    return guarded
