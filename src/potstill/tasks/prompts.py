"""Prompt templates: Jinja2 for the system message and the user turn, overridable in YAML."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from jinja2 import Template, TemplateError, meta

from potstill.config import ConfigError, PromptConfig, TemplatesConfig
from potstill.models.base import Message
from potstill.tasks.sandbox import LOADING_TAGS, BoundedEnvironment, guard, render_budget

if TYPE_CHECKING:
    from potstill.tasks.base import Example, Parsed

# Every template may use these, besides the task's input fields and its own extras.
COMMON_VARIABLES = ("inputs", "description", "answer_format", "style")
DEFAULT_SYSTEM = "{{ description }} {{ answer_format }}"

# Jinja's sandbox with no loader and bounded size, work and time (tasks/sandbox.py).
_ENV = BoundedEnvironment()


def default_user_template(fields: Iterable[str]) -> str:
    """One field: its text alone. Several: one `Field: text` line each."""
    slots = {name: "{{ inputs[" + json.dumps(name) + "] }}" for name in fields}
    if len(slots) == 1:
        return next(iter(slots.values()))
    return "\n".join(f"{name.capitalize()}: {slot}" for name, slot in slots.items())


class Prompts:
    """The templates of one task: the kind's defaults, overridden by `task.templates`.

    Unknown variables and tags that read other templates (include, import, extends) are a
    config error naming the key (`task.templates.cot.system`), found when the task is built
    rather than halfway through a run; so is a render that goes past the sandbox's bounds.
    """

    def __init__(
        self,
        overrides: TemplatesConfig,
        *,
        default_user: str,
        variables: Iterable[str],
        default_system: str = DEFAULT_SYSTEM,
    ) -> None:
        self._variables = set(COMMON_VARIABLES) | set(variables)
        self._templates: dict[tuple[str, str], tuple[str, Template]] = {}
        sources = {
            ("*", "system"): ("task.templates.system", overrides.system or default_system),
            ("*", "user"): ("task.templates.user", overrides.user or default_user),
        }
        for style in ("zero_shot", "cot", "chain_of_density"):
            own = getattr(overrides, style)
            for part in ("system", "user"):
                text = getattr(own, part) if own is not None else None
                if text is not None:
                    sources[(style, part)] = (f"task.templates.{style}.{part}", text)
        for slot, (key, text) in sources.items():
            self._templates[slot] = (key, self._compile(key, text))

    def _compile(self, key: str, text: str) -> Template:
        try:
            tree = _ENV.parse(text)
        except TemplateError as exc:
            raise ConfigError(f"{key}: not a valid Jinja2 template ({exc})") from None
        for tag, name in LOADING_TAGS.items():
            found = next(iter(tree.find_all(tag)), None)
            if found is not None:
                raise ConfigError(
                    f"{key}: {{% {name} %}} (line {found.lineno}) is not allowed: a prompt "
                    "template reads no other template; write the text into this one"
                )
        unknown = sorted(meta.find_undeclared_variables(tree) - self._variables)
        if unknown:
            raise ConfigError(
                f"{key}: unknown template variable(s) {unknown}; this task offers "
                f"{sorted(self._variables)}"
            )
        return _ENV.from_string(guard(tree))

    def _render(self, style: str, part: str, context: Mapping[str, Any]) -> str:
        key, template = self._templates.get((style, part)) or self._templates[("*", part)]
        try:
            with render_budget():
                return template.render(**context).strip()
        except TemplateError as exc:
            raise ConfigError(f"{key}: the template failed to render ({exc})") from None
        except RecursionError:
            raise ConfigError(
                f"{key}: the template failed to render (recursion too deep: a macro that "
                "calls itself without end?)"
            ) from None
        except Exception as exc:  # the template's own code failed: 1 / 0, range(10**9), ...
            raise ConfigError(
                f"{key}: the template failed to render ({type(exc).__name__}: {exc})"
            ) from None

    def system(self, style: str, context: Mapping[str, Any]) -> str:
        return self._render(style, "system", {**context, "style": style})

    def user(self, style: str, context: Mapping[str, Any]) -> str:
        return self._render(style, "user", {**context, "style": style})


class TemplatedTask:
    """What every task kind does the same way: its system and user turns are its templates
    (`self.prompts`) filled with its `_context`, worked examples come before the real input,
    and a worked answer is written in the reply format of the style.

    It is also the one place of the `Task` protocol's defaults, which a kind overrides only
    where it does something: every input is usable (`check_inputs`), a reference is kept as
    written (`canonical_reference`), and there are no corpus metrics (`corpus_scores`) and
    no details (`details`)."""

    prompts: Prompts
    reference_match: bool
    description: str
    # Template variables an input may leave out, and what they are then.
    input_defaults: ClassVar[Mapping[str, str]] = {}

    def _context(self, inputs: Mapping[str, str], style: str) -> dict[str, Any]:
        """The variables of every template: the input's fields (also as `inputs`), the kind's
        own (`_variables`), `description` and the style's `answer_format`."""
        return {
            **self.input_defaults,
            **inputs,
            "inputs": dict(inputs),
            **self._variables(inputs),
            "description": self.description,
            "answer_format": self._answer_format(style),
        }

    def _variables(self, inputs: Mapping[str, str]) -> dict[str, Any]:
        return {}

    def _answer_format(self, style: str) -> str:
        return ""

    def user_text(self, inputs: Mapping[str, str], style: str) -> str:
        return self.prompts.user(style, self._context(inputs, style))

    def parse_flexible(
        self, reply: str, style: str, inputs: Mapping[str, str] | None = None
    ) -> Parsed:
        """The strict parse, else the kind's answer found anywhere in the reply
        (`_found_anywhere`: the answer and the text it was read from), marked `flexible`."""
        from potstill.tasks.base import Parsed, Task

        strict = cast(Task, self).parse(reply, style, inputs)
        if strict.ok:
            return strict
        found = self._found_anywhere(reply, inputs)
        if found is None:
            return strict
        answer, raw = found
        return Parsed("ok", answer, None, raw, detail="flexible")

    def _found_anywhere(
        self, reply: str, inputs: Mapping[str, str] | None
    ) -> tuple[str, str] | None:
        return None

    def messages(self, inputs: dict[str, str], prompt: PromptConfig) -> list[Message]:
        from potstill.tasks.base import Task, build_messages, task_user_text

        task = cast(Task, self)  # every subclass is a whole Task
        system = self.prompts.system(prompt.style, self._context(inputs, prompt.style))
        return build_messages(system, task_user_text(task, inputs, prompt.style), prompt, task)

    def reply_text(self, answer: str, reason: str | None, style: str) -> str:
        from potstill.tasks.base import render_reply

        return render_reply(answer, reason, style)

    def check_inputs(self, inputs: Mapping[str, str]) -> tuple[str, str] | None:
        return None

    def canonical_reference(self, reference: str, inputs: Mapping[str, str]) -> str:
        return reference

    def corpus_scores(
        self, parsed: Sequence[Parsed], examples: Sequence[Example]
    ) -> dict[str, float]:
        return {}

    def details(self, parsed: Sequence[Parsed], examples: Sequence[Example]) -> dict[str, Any]:
        return {}

    def target_answer(self, parsed: Parsed) -> str:
        # Right-or-wrong kinds learn the canonical answer, which is what `score` compares and
        # what a client of the served student reads; open text keeps the teacher's layout.
        if self.reference_match or parsed.raw_answer is None:
            return str(parsed.answer)
        return parsed.raw_answer
