"""`potstill serve`: an OpenAI-compatible endpoint for a local model (e.g. a distilled student)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from potstill.models.base import ChatRequest
from potstill.models.local import LocalChatModel


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str


class CompletionRequest(BaseModel):
    # Clients send many optional fields (seed, stream, ...); unknown ones are ignored.
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = None
    stream: bool = False


def create_app(model: LocalChatModel, name: str) -> Any:
    """The FastAPI app serving `/v1/models` and `/v1/chat/completions` for one model."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="potstill serve")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "potstill"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(body: CompletionRequest) -> dict[str, Any]:
        if body.stream:
            raise HTTPException(status_code=400, detail="streaming is not supported")
        request = ChatRequest(
            messages=[{"role": m.role, "content": m.content} for m in body.messages],
            max_tokens=body.max_completion_tokens or body.max_tokens or 256,
            temperature=body.temperature,
            sample_index=body.seed or 0,
        )
        (answer,) = await model.generate([request])
        if answer.error:
            raise HTTPException(status_code=500, detail=answer.error)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": answer.finish_reason,
                    "message": {"role": "assistant", "content": answer.text},
                }
            ],
            "usage": {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            },
        }

    return app


def serve(ref: str, host: str = "127.0.0.1", port: int = 8000, name: str | None = None) -> None:
    import uvicorn

    model = LocalChatModel(ref, batch_size=1)
    uvicorn.run(create_app(model, name or ref), host=host, port=port, log_level="info")
