"""The `openai` backend over real HTTP: where its key comes from, and what its errors show."""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from potstill.models.base import ChatRequest
from potstill.models.openai_backend import MissingKeyError, OpenAIChatModel

if TYPE_CHECKING:
    from conftest import Tally

SENTINEL = "sk-potstill-sentinel-77c1"
DECOY = "sk-potstill-decoy-from-openai-api-key"


def _echo_server() -> Any:
    """Answers with the Authorization header it got; `/v1/fail/<code>` echoes it in an error."""
    from fastapi import FastAPI, Header, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any], authorization: str = Header("")) -> dict[str, Any]:
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": authorization},
                }
            ],
        }

    @app.post("/fail/{code}/v1/chat/completions")
    async def fail(code: int, request: Request) -> Any:
        auth = request.headers.get("authorization", "")
        if code == 502:  # a proxy's plain-text page
            return PlainTextResponse(f"bad gateway for {auth}", status_code=code)
        return JSONResponse(
            {"error": {"message": f"rejected credentials {auth}", "type": "invalid_request"}},
            status_code=code,
        )

    return app


def _ask(model: OpenAIChatModel) -> Any:
    (answer,) = asyncio.run(model.generate([ChatRequest([{"role": "user", "content": "hi"}])]))
    return answer


def test_the_key_comes_only_from_the_variable_the_config_names(
    start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = start_server(_echo_server())
    monkeypatch.setenv("OPENAI_API_KEY", DECOY)  # the SDK's own default; never used
    monkeypatch.setenv("POTSTILL_TEST_KEY", SENTINEL)
    assert _ask(OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY")).text == (
        f"Bearer {SENTINEL}"
    )
    assert _ask(OpenAIChatModel("m", url)).text == "Bearer not-needed"
    monkeypatch.delenv("POTSTILL_TEST_KEY")
    with pytest.raises(MissingKeyError, match="POTSTILL_TEST_KEY"):
        OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY")


@pytest.mark.parametrize("code", [400, 401, 403, 500, 502])
def test_an_endpoint_error_that_echoes_the_key_is_shown_redacted(
    start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch, code: int, tally: "Tally"
) -> None:
    url = start_server(_echo_server()).removesuffix("/v1") + f"/fail/{code}/v1"
    monkeypatch.setenv("POTSTILL_TEST_KEY", SENTINEL)
    answer = _ask(OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY", max_retries=0))
    assert answer.text is None and answer.error is not None
    tally.count("secrets: endpoint errors checked")
    tally.count("secrets: sentinel hits", SENTINEL in answer.error)
    assert str(code) in answer.error and SENTINEL not in answer.error
    if code != 502:  # the SDK quotes a JSON error body; of a plain-text one, only the status
        assert "rejected credentials Bearer ***" in answer.error
