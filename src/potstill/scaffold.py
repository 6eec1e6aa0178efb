"""`potstill init DATA`: look at a data file, guess the task, write a commented config.

The guesses are shown with their reasons. Where one cannot be made, the question is put to
the user on a terminal, else the config holds a `<FILL IN: ...>` placeholder, which
`potstill check` and `potstill run` refuse, naming the key.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from rich.table import Table

from potstill.config import PLACEHOLDER, ConfigError, DatasetConfig, TaskConfig, TaskKind
from potstill.data.loading import read_rows
from potstill.progress import console, say

# ask(question, choices) -> one of the choices; None: nobody to ask (no terminal).
Ask = Callable[[str, Sequence[str]], str] | None
KINDS: tuple[str, ...] = get_args(TaskKind)
_ID_NAME = re.compile(r"(^|[_\-\s]|[a-z](?=I))(id|Id|ID|idx|uid|guid|key)$")
_ROWS_READ = 50_000  # enough to see the columns and count the labels of any real file


@dataclass
class Column:
    name: str
    values: list[Any] = field(default_factory=list)  # non-empty cells, in file order

    @property
    def distinct(self) -> int:
        return len({json.dumps(v, sort_keys=True, default=str) for v in self.values})

    @property
    def mean_chars(self) -> float:
        return sum(len(str(v)) for v in self.values) / max(1, len(self.values))

    @property
    def type(self) -> str:
        if self.values and all(isinstance(v, list) for v in self.values):
            return "list"
        if self.values and all(_is_number(v) for v in self.values):
            return "number"
        return "text"


@dataclass
class Guess:
    kind: str
    fields: dict[str, str]  # task field -> column (or a placeholder)
    labels: Counter[str] | None = None
    reasons: list[str] = field(default_factory=list)


def input_fields(kind: str) -> tuple[str, ...]:
    """The input fields of a task kind with its default settings."""
    from potstill.tasks import build_task

    labels = ["label"] if kind == "classification" else None
    return build_task(TaskConfig(kind=kind, labels=labels)).input_fields


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value).replace(",", ""))
    except ValueError:
        return False
    return True


def read_columns(data: str) -> tuple[str, int, list[Column]]:
    """The file's source name, its row count and its columns with their non-empty values."""
    source, rows = read_rows(DatasetConfig(path=data))
    columns: dict[str, Column] = {}
    count = 0
    for count, (_, row) in enumerate(rows, start=1):
        for name, value in row.items():
            column = columns.setdefault(name, Column(name))
            if value is not None and str(value).strip() not in ("", "[]"):
                column.values.append(value)
        if count >= _ROWS_READ:
            break
    if count == 0:
        raise ConfigError(f"{source}: no rows to look at")
    return source, count, list(columns.values())


def _placeholder(what: str) -> str:
    return f"{PLACEHOLDER}: {what}>"


def _pick(what: str, choices: list[str], ask: Ask) -> str:
    if ask is None or not choices:
        return _placeholder(what)
    return ask(what, choices)


def _label_column(columns: list[Column], rows: int) -> Column | None:
    """A short text column with few distinct values, each seen more than once on average."""
    found = [
        c
        for c in columns
        if c.type != "list"
        and 2 <= c.distinct <= min(50, max(2, rows // 2))
        and c.mean_chars <= 40
        and len(c.values) >= rows * 0.9
    ]
    return min(found, key=lambda c: c.distinct) if found else None


def guess(columns: list[Column], rows: int, kind: str | None, ask: Ask = None) -> Guess:
    """The task kind, the field mapping and (classification) the label set, with reasons."""
    id_column = next((c for c in columns if _ID_NAME.search(c.name) and c.distinct == rows), None)
    rest = [c for c in columns if c is not id_column]
    texts = sorted((c for c in rest if c.type == "text"), key=lambda c: -c.mean_chars)
    label = _label_column(rest, rows)
    numbers = [c for c in rest if c.type == "number" and c is not label]
    shorter = (
        texts[1] if len(texts) >= 2 and texts[1].mean_chars <= texts[0].mean_chars / 2 else None
    )
    reasons: list[str] = []
    if kind is None:
        if label is not None and any(t is not label for t in texts):
            kind = "classification"
            reasons.append(f"column {label.name!r} has {label.distinct} distinct short values")
        elif numbers and texts:
            kind = "math"
            reasons.append(f"column {numbers[0].name!r} holds numbers")
        elif shorter is not None:
            kind = "summarization"
            reasons.append(
                f"column {shorter.name!r} is much shorter than {texts[0].name!r} "
                f"({shorter.mean_chars:.0f} vs {texts[0].mean_chars:.0f} characters)"
            )
        else:
            kind = _pick("the task kind: " + ", ".join(KINDS), list(KINDS), ask)
            reasons.append("no kind could be guessed from the columns")
    answer: Column | None = {
        "classification": label,
        "math": numbers[0] if numbers else None,
        "summarization": shorter,
    }.get(kind)
    fields: dict[str, str] = {}
    inputs = [t for t in texts if t is not answer]
    wanted = input_fields(kind) if kind in KINDS else ()
    for name in wanted:
        own = next((c for c in rest if c.name == name), None)
        chosen = own or (inputs[0] if inputs and len(wanted) == 1 else None)
        names = [c.name for c in rest if c is not answer]
        fields[name] = chosen.name if chosen else _pick(f"the column of the {name}", names, ask)
    if answer is None:
        answer = next((c for c in rest if c.name == "answer"), None)
    fields["answer"] = (
        answer.name
        if answer
        else _pick("the column of the reference answer", [c.name for c in rest], ask)
    )
    if id_column is not None:
        fields["id"] = id_column.name
    found = next((c for c in rest if c.name == fields["answer"]), None)
    labels = None
    if kind == "classification" and found is not None:
        labels = Counter(str(v).strip() for v in found.values)
    return Guess(kind, fields, labels, reasons)


def show(source: str, rows: int, columns: list[Column], found: Guess) -> None:
    table = Table(title=f"{source}: {rows} rows", title_justify="left")
    for name in ("column", "type", "distinct", "values"):
        table.add_column(name)
    for c in columns:
        sample = "; ".join(" ".join(str(v).split())[:30] for v in c.values[:3])
        table.add_row(c.name, c.type, str(c.distinct), sample)
    console.print(table)
    why = f" ({'; '.join(found.reasons)})" if found.reasons else ""
    say(f"kind: {found.kind}{why}")
    for name, column in found.fields.items():
        say(f"  {name} <- {column}")
    if found.labels:
        counts = ", ".join(f"{label} {n}" for label, n in found.labels.most_common())
        say(f"labels: {counts}")


_PACKAGED = '{backend: local, model: "packaged:smollm2-135m-instruct", batch_size: 8}'
_ENDPOINT = """\
  # For a real run, ask a large model behind an OpenAI-compatible endpoint instead (the key
  # stays in the environment variable; prices in dollars per million tokens):
  # model: {backend: openai, model: gpt-4o-mini, base_url: "https://api.openai.com/v1",
  #         api_key_env: OPENAI_API_KEY, price_per_million_input: 0.15,
  #         price_per_million_output: 0.6}
"""
_DESCRIPTIONS = {
    "classification": "Classify the text.",
    "math": "Solve the problem; give the final number.",
    "summarization": "Summarize the document.",
}


def _q(value: Any) -> str:
    """A YAML scalar (JSON is YAML): quoted where needed."""
    text = json.dumps(value, ensure_ascii=False)
    plain = isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", value)
    return value if plain else text


def _teacher_prompt(kind: str) -> list[str]:
    """Chain of thought with a JSON answer where the answer is a label, letter or number;
    open text is asked zero-shot, since the packaged model writes plain text, not the JSON
    that chain of density (the paper's summary prompt) needs."""
    if kind not in ("summarization", "conversation"):
        return ["  prompt: {style: cot, max_tokens: 96}"]
    dense = (
        "  # With a large teacher, the paper's prompt: {style: chain_of_density, max_tokens: 512}"
    )
    return [
        "  prompt: {style: zero_shot, max_tokens: 128}",
        *([dense] if kind == "summarization" else []),
    ]


def render(found: Guess, name: str, data_path: str, source: str, rows: int) -> str:
    """The config text: runs offline on the packaged model as it stands."""
    test_size = max(1, min(200, rows // 5))
    lines = [
        f"# A potstill run config written by `potstill init` from {source} ({rows} rows).",
        "# Check it with `potstill check THIS_FILE`; every key is in docs/config.md, and",
        "# `potstill schema` gives editors completion (see docs/config.md).",
        f"name: {_q(name)}",
        "task:",
        f"  kind: {_q(found.kind)}",
    ]
    if found.kind in _DESCRIPTIONS:
        lines.append(
            f"  description: {_q(_DESCRIPTIONS[found.kind])}  # the models' instruction; "
            "say what the task means"
        )
    if found.kind == "classification":
        if found.labels:
            counts = ", ".join(f"{label} {n}" for label, n in found.labels.most_common())
            labels = ", ".join(_q(label) for label, _ in found.labels.most_common())
            lines.append(f"  labels: [{labels}]  # in the file: {counts}")
        else:
            lines.append(f"  labels: [{_q(_placeholder('the labels'))}]")
    mapped = {k: v for k, v in found.fields.items() if k != v}
    shown = ", ".join(f"{k}: {_q(v)}" for k, v in mapped.items())
    lines += [
        "dataset:",
        f"  path: {_q(data_path)}  # relative to this file",
        f"  fields: {{{shown}}}  # task field: the file's column",
        f"  test_size: {test_size}  # examples held out to evaluate on; the rest train",
        "teacher:",
        "  # The packaged SmolLM2-135M runs offline here, but is far too small to teach well.",
        f"  model: {_PACKAGED}",
        _ENDPOINT.rstrip("\n"),
        *_teacher_prompt(found.kind),
        "students:",
        "  - name: distilled",
        f"    base: {_PACKAGED}",
        "    train: {method: lora, epochs: 1, batch_size: 4}",
        "synth:",
        "  prompt: {style: zero_shot, max_tokens: "
        + ("128}" if found.kind == "summarization" else "16}"),
        "judge:",
        "  # The judge is the packaged model too: offline, but the teacher's own model and too",
        "  # small to grade well; point it at an endpoint like the teacher for a real run.",
        f"  model: {_PACKAGED}",
        f"  sample_size: {min(test_size, 30)}",
    ]
    return "\n".join(lines) + "\n"


def _folder_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip(".-")
    return name or "run"


def init_config(
    data: Path, kind: str | None, out: Path | None, ask: Ask = None, force: bool = False
) -> Path:
    """Look at DATA, show what was found and guessed, and write the config; returns its path."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    hub = str(data).startswith("hf:")
    source, rows, columns = read_columns(str(data) if hub else str(data.resolve()))
    found = guess(columns, rows, kind, ask)
    show(source, rows, columns, found)
    out = out or Path(f"{_folder_name(data.stem)}.yaml")
    if out.exists() and not force:
        raise ConfigError(f"{out}: exists already; choose another --out, or --force")
    data_path = str(data) if hub else os.path.relpath(data.resolve(), out.resolve().parent)
    out.write_text(render(found, _folder_name(data.stem), data_path, data.name, rows), "utf-8")
    unfilled = sum(PLACEHOLDER in v for v in found.fields.values()) + (PLACEHOLDER in found.kind)
    say(f"wrote {out}")
    if unfilled:
        say(f"{out}: replace the {PLACEHOLDER}: ...> placeholder(s), then `potstill check {out}`")
    else:
        say(f"next: potstill check {out}")
    return out
