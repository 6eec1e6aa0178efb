"""`potstill export`: the student's merged Hugging Face folder, and the same with an Ollama
Modelfile carrying the prompt the student was trained and evaluated with."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from potstill.export import ExportError, export_student
from potstill.tasks import build_task


def test_hf_and_ollama_exports_hold_the_student_and_its_prompt(
    make_evaluated_run: Callable[..., Any],
) -> None:
    from transformers import AutoModelForCausalLM

    run, config = make_evaluated_run("synth.prompt.temperature=0.2")
    final = run.student_dir("distilled") / "final"

    hf = export_student(run, config, None, "hf", None)
    assert hf.folder == run.root / "export" / "distilled-hf"
    assert {p.name: p.read_bytes() for p in hf.folder.iterdir()} == {
        p.name: p.read_bytes() for p in final.iterdir()
    }
    AutoModelForCausalLM.from_pretrained(hf.folder)  # a standalone model, no peft needed

    ollama = export_student(run, config, "distilled", "ollama", None)
    assert "Modelfile" in ollama.files and "model.safetensors" in ollama.files
    text = (ollama.folder / "Modelfile").read_text()
    test_inputs = run.data_dir / "test.jsonl"
    assert test_inputs.exists()
    from potstill.data.loading import read_examples

    example = read_examples(test_inputs)[0]
    system = build_task(config.task).messages(example.inputs, config.synth.prompt)[0]["content"]
    assert text.splitlines()[1:] == [
        "FROM .",
        "PARAMETER temperature 0.2",
        f"PARAMETER num_predict {config.synth.prompt.max_tokens}",
        f'SYSTEM """{system}"""',
    ]

    with pytest.raises(ExportError, match="distilled-hf: exists; remove it or choose another"):
        export_student(run, config, None, "hf", None)
    with pytest.raises(ExportError, match="no student 'nobody'; the run has distilled"):
        export_student(run, config, "nobody", "hf", None)


def test_gguf_is_refused_in_one_line_naming_the_formats(
    make_evaluated_run: Callable[..., Any],
) -> None:
    run, _ = make_evaluated_run()
    done = subprocess.run(
        [sys.executable, "-m", "potstill", "export", str(run.root), "--format", "gguf"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in out
    assert "--format must be one of hf, ollama" in out
    assert not (run.root / "export").exists()
