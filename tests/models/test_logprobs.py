"""The teacher's token distributions: a local model's top-K by teacher forcing equals a plain
forward pass; the compact call-store form round-trips; an endpoint's `logprobs` are read from
a real HTTP reply (tests/fault_server.py)."""

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fault_server import FaultServer, logprob_content

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.logprobs import (
    TopLogprobs,
    decode,
    encode,
    from_openai_choice,
    teacher_forced_topk,
)
from potstill.models.openai_backend import OpenAIChatModel
from potstill.models.packaged import load_pretrained

PROMPT = [
    {"role": "system", "content": "Answer with an expression."},
    {"role": "user", "content": "Paul has 14 crayons and gets 5 more. How many now?"},
]


def test_local_top_k_equals_a_plain_forward_pass(tiny_model_dir: Path) -> None:
    tokenizer, model = load_pretrained(str(tiny_model_dir))
    model.eval()
    found = teacher_forced_topk(model, tokenizer, PROMPT, "14 + 5", k=5)
    # The same row built by hand from the chat template, run through the model once.
    text = tokenizer.apply_chat_template(
        [*PROMPT, {"role": "assistant", "content": "14 + 5"}], tokenize=False
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    start = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    expected = torch.log_softmax(logits, -1)[start - 1 : len(ids) - 1].topk(5, dim=-1)
    assert found.tokens == ids[start:]
    assert tokenizer.decode(found.tokens).startswith("14 + 5<|im_end|>")
    assert found.top_tokens == expected.indices.tolist()
    np.testing.assert_allclose(found.top_logprobs, expected.values.numpy(), rtol=1e-5, atol=1e-6)


def test_the_compact_form_round_trips_ids_and_texts() -> None:
    lps = np.array([[-0.1, -2.5], [-0.3, -np.inf]], dtype=np.float32)
    for tokens, top in (([3, 9], [[3, 4], [9, 0]]), (["a", "b"], [["a", "c"], ["b", ""]])):
        packed = encode(TopLogprobs(list(tokens), [list(r) for r in top], lps))
        assert isinstance(packed["lp"], str)  # base64 float32, not JSON numbers
        back = decode(packed)
        assert (back.tokens, back.top_tokens) == (tokens, top)
        np.testing.assert_array_equal(back.top_logprobs, lps)
    response = ChatResponse("ab", logprobs=packed)
    assert ChatResponse.from_json(response.to_json()).logprobs == packed


def test_an_openai_choice_without_logprobs_reads_as_none() -> None:
    assert from_openai_choice({"message": {"content": "x"}}) is None
    assert from_openai_choice({"logprobs": {"content": []}}) is None


def _ask(url: str, request: ChatRequest) -> ChatResponse:
    model = OpenAIChatModel("m", base_url=url, max_retries=0, timeout_s=5)
    return asyncio.run(model.generate([request]))[0]


def test_the_openai_backend_reads_top_logprobs_from_the_endpoint() -> None:
    seen: list[dict[str, Any]] = []

    def logprobs(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
        seen.append(body)
        return logprob_content(list(text), ["x", "y", "z"], body["top_logprobs"])

    server = FaultServer(reply=lambda body: "14+5", logprobs=logprobs)
    url = server.start()
    try:
        asked = _ask(url, ChatRequest(PROMPT, 8, logprobs=3))
        plain = _ask(url, ChatRequest(PROMPT, 8))
    finally:
        server.stop()
    assert len(seen) == 1 and seen[0]["logprobs"] is True and seen[0]["top_logprobs"] == 3
    assert asked.text == "14+5" and asked.logprobs is not None
    found = decode(asked.logprobs)
    assert found.tokens == ["1", "4", "+", "5"]
    assert found.top_tokens[0] == ["1", "x", "y"]
    np.testing.assert_allclose(found.top_logprobs[0], [-0.1, -2.0, -3.0])
    assert plain.ok and plain.logprobs is None


def test_logprobs_change_the_call_store_key_and_nothing_else_does() -> None:
    from potstill.models.callstore import request_key

    plain, asked = ChatRequest(PROMPT, 8), ChatRequest(PROMPT, 8, logprobs=3)
    assert plain.sampling() == {"max_tokens": 8, "temperature": 0.0}  # keys kept as before
    assert request_key("m", plain) != request_key("m", asked)


@pytest.mark.parametrize("secret", ["sk-secret-123"])
def test_token_texts_that_spell_the_key_are_dropped(secret: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("KEYVAR", secret)
    server = FaultServer(
        reply=lambda body: "ok",
        logprobs=lambda body, text: logprob_content(["sk-", "secret-123"], [], 1),
    )
    url = server.start()
    try:
        model = OpenAIChatModel("m", base_url=url, api_key_env="KEYVAR", max_retries=0)
        got = asyncio.run(model.generate([ChatRequest(PROMPT, 8, logprobs=1)]))[0]
    finally:
        server.stop()
    assert got.ok and got.logprobs is None
