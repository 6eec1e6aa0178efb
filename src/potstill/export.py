"""`potstill export RUN --student NAME --format hf|ollama`: a trained student for local
runtimes.

`hf` is the student's standalone model as training published it (students/<name>/final:
LoRA merged, tokenizer, chat template, generation config), copied whole to `--out`. `ollama`
is the same folder with a `Modelfile` beside the weights: Ollama imports a safetensors folder
itself (`ollama create NAME -f Modelfile`) for the architectures it supports, and the
Modelfile carries the system prompt and sampling the student was trained and evaluated with.
There is no GGUF format: no maintained Hugging Face to GGUF converter installs from PyPI
(llama.cpp's `convert_hf_to_gguf.py` ships with llama.cpp, not with the `gguf` package).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from potstill.config import RunConfig, StudentConfig
from potstill.data.loading import read_examples
from potstill.errors import UserError
from potstill.files import atomic_write_text
from potstill.runs import RunFolder

FORMATS = ("hf", "ollama")
Format = Literal["hf", "ollama"]


class ExportError(UserError, ValueError):
    """A student that cannot be exported as asked; the message says what to do."""


def trained_student(run: RunFolder, config: RunConfig, name: str | None) -> StudentConfig:
    """The student named (or the run's only one) whose final model training published."""
    names = [s.name for s in config.students]
    if name is None:
        if len(names) > 1:
            raise ExportError(f"{run.root}: the run has students {', '.join(names)}: name one")
        name = names[0]
    if name not in names:
        raise ExportError(f"{run.root}: no student {name!r}; the run has {', '.join(names)}")
    if not (run.student_dir(name) / "final" / "config.json").exists():
        raise ExportError(
            f"{run.student_dir(name) / 'final'}: student {name} is not trained yet; run "
            f"`potstill train {run.root}` first"
        )
    return next(s for s in config.students if s.name == name)


def student_system_prompt(run: RunFolder, config: RunConfig) -> str | None:
    """The system prompt the students are trained and evaluated with (`synth.prompt`),
    rendered for the pinned test split; None when the prompt has no system turn or its system
    turn differs from one input to another (then no single prompt fits a runtime)."""
    from potstill.tasks import build_task

    task = build_task(config.task)
    found = set()
    for example in read_examples(run.data_dir / "test.jsonl")[:3]:
        messages = task.messages(example.inputs, config.synth.prompt)
        found.add(messages[0]["content"] if messages[0]["role"] == "system" else None)
    return found.pop() if len(found) == 1 else None


def _quoted(text: str) -> str:
    # A Modelfile's triple-quoted value ends at the first `"""`; none can appear inside.
    return '"""' + text.replace('"""', '" " "') + '"""'


def modelfile(run: RunFolder, config: RunConfig) -> str:
    """An Ollama Modelfile for the folder it sits in: the weights beside it, the students'
    system prompt, and the sampling they were evaluated with."""
    prompt = config.synth.prompt
    lines = [
        f"# {config.name}: a student distilled by potstill; `ollama create NAME -f Modelfile`",
        "FROM .",
        f"PARAMETER temperature {prompt.temperature:g}",
        f"PARAMETER num_predict {prompt.max_tokens}",
    ]
    system = student_system_prompt(run, config)
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    else:
        lines.append(
            "# No SYSTEM: the students' prompt has no system turn the same for every input."
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Exported:
    folder: Path
    files: list[str]


def export_student(
    run: RunFolder, config: RunConfig, student: str | None, fmt: str, out: Path | None
) -> Exported:
    """Write the student in `fmt` to `out` (default runs/<run>/export/<student>-<fmt>),
    whole or not at all; an existing `out` is never overwritten."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)} (no GGUF: see docs)")
    chosen = trained_student(run, config, student)
    target = out or run.root / "export" / f"{chosen.name}-{fmt}"
    if target.exists():
        raise ExportError(f"{target}: exists; remove it or choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(run.student_dir(chosen.name) / "final", staging)
        if fmt == "ollama":
            atomic_write_text(staging / "Modelfile", modelfile(run, config))
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(target, sorted(p.name for p in target.iterdir()))
