import asyncio
from pathlib import Path

import pytest

from potstill.models.base import ChatRequest
from potstill.models.local import LocalChatModel
from potstill.models.packaged import ModelRefError, resolve_local_ref


def test_batched_generation_matches_one_at_a_time(tiny_model_dir: Path) -> None:
    model = LocalChatModel(str(tiny_model_dir), batch_size=4)
    requests = [
        ChatRequest([{"role": "user", "content": text}], max_tokens=6)
        for text in ["Hi", "A much longer question about apples and pears, please", "2+2?"]
    ]
    batched = asyncio.run(model.generate(requests))
    single = [asyncio.run(model.generate([r]))[0] for r in requests]
    # Left padding must not change what a greedy model says.
    assert [b.text for b in batched] == [s.text for s in single]
    for answer, request in zip(batched, requests):
        assert answer.completion_tokens <= request.max_tokens
        assert answer.finish_reason in {"stop", "length"}
        assert answer.prompt_tokens > 5


def test_identity_changes_when_weights_change(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    first = LocalChatModel(str(copy)).identity
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # same bytes, new file: a retrained model
    assert LocalChatModel(str(copy)).identity != first


def test_model_refs(tmp_path: Path) -> None:
    assert resolve_local_ref("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    with pytest.raises(ModelRefError, match="not a model folder"):
        resolve_local_ref(str(tmp_path))
    with pytest.raises(ModelRefError, match="unknown packaged model"):
        resolve_local_ref("packaged:nope")
