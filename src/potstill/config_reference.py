"""docs/config.md, the reference of every config key, written from the pydantic models.

The descriptions live on the fields (`Field(description=...)`), so a new key appears here by
itself; `python -m potstill.config_reference` rewrites the page, and a test fails while the
page differs from what the models say.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from potstill.config import RunConfig, _models_in

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"

INTRO = """\
# Config reference

Every key of a run config, section by section: its type, its default and what it means.
This page is generated from the config models (`src/potstill/config.py`, where each key's
description lives); do not edit it by hand, run `python -m potstill.config_reference` after
changing the models (a test fails while this page is out of date).

Start a config with `potstill init DATA` and check it with `potstill check CONFIG`, which
reports every problem a run would meet before its first model call.

## Completion and checking in the editor

`potstill schema` prints the JSON Schema of a run config. With the YAML extension of VS Code
(Red Hat's `redhat.vscode-yaml`), save it once and point your configs at it:

```
potstill schema > potstill.schema.json
```

either on the first line of one config

```yaml
# yaml-language-server: $schema=./potstill.schema.json
```

or for many in `.vscode/settings.json`

```json
{"yaml.schemas": {"./potstill.schema.json": ["configs/**/*.yaml", "*.potstill.yaml"]}}
```

The editor then completes keys, shows each key's description on hover and marks unknown keys
and wrong types as you type. Regenerate the file after upgrading potstill.

A key written `a[].b` is the key `b` of every entry of the list `a` (in an override:
`students.0.train.epochs=3`). "required" means the key has no default.
"""

_SCALARS = {str: "text", int: "integer", float: "number", bool: "true / false"}
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


@dataclass
class Section:
    """One table of the page: the keys of one config model at one place in the config."""

    path: str
    doc: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    same_as: str | None = None


def type_text(annotation: Any) -> str:
    """A field's type in words: `integer`, `"lora" | "full"`, `list of text`, `section`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if isinstance(annotation, type):
        return _SCALARS.get(annotation, annotation.__name__)
    return str(annotation)


def _bounds(info: FieldInfo) -> str:
    found = [
        f"{sign} {getattr(item, name)}"
        for item in info.metadata
        for name, sign in _BOUNDS
        if getattr(item, name, None) is not None
    ]
    return f" ({', '.join(found)})" if found else ""


def default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        return f"{len(value)} entry" if len(value) == 1 else f"{len(value)} entries"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def sections(
    model: type[BaseModel] = RunConfig, path: str = "", defaults: BaseModel | None = None
) -> list[Section]:
    """The section at `path` and every section below it, in the order of the fields.
    `defaults` is the section's default value where it differs from the model's own
    (teacher.prompt asks cot by default, synth.prompt zero_shot)."""
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    found = [Section(path or "(top level)", " ".join(doc.split()))]
    below: list[Section] = []
    for name, info in model.model_fields.items():
        value: Any = None
        if defaults is not None:
            value = getattr(defaults, name)
        elif not info.is_required():
            value = info.get_default(call_default_factory=True)
        required = defaults is None and info.is_required()
        default = "required" if required else default_text(value)
        kind = type_text(info.annotation) + _bounds(info)
        found[0].rows.append((name, kind, default, info.description or ""))
        key = f"{path}.{name}" if path else name
        listed = "list of" in type_text(info.annotation)
        for sub in _models_in(info.annotation):
            sub_default = value if isinstance(value, sub) else None
            below += sections(sub, f"{key}[]" if listed else key, sub_default)
    return found + below


def _mark_repeats(found: list[Section]) -> None:
    """A section whose model and defaults were shown before points there instead."""
    seen: dict[str, str] = {}
    for section in found:
        signature = json.dumps(section.rows) + section.doc
        if signature in seen:
            section.same_as = seen[signature]
        else:
            seen[signature] = section.path


def render() -> str:
    """The whole page, docs/config.md."""
    found = sections()
    _mark_repeats(found)
    lines = [INTRO]
    for section in found:
        lines += ["", f"## `{section.path}`", ""]
        if section.doc:
            lines += [section.doc, ""]
        if section.same_as is not None:
            lines.append(f"The same keys and defaults as `{section.same_as}`.")
            continue
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [
            f"| `{k}` | {_cell(t)} | {_cell(d)} | {_cell(m)} |" for k, t, d, m in section.rows
        ]
    return "\n".join(lines) + "\n"


def schema_text() -> str:
    """The JSON Schema of a run config, for editors (`potstill schema`)."""
    return json.dumps(RunConfig.model_json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOC_PATH
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
