"""A stand-in for an OpenAI-style Batch API, on 127.0.0.1, for tests of the teacher in batch
mode: the files endpoints (upload, content), the batches endpoints (create, retrieve, list)
and, for the online run it is compared with, chat completions, all answered by one `reply`.

It counts every request it was sent, per call-store key (a batch line's `custom_id`; an
online request's key as potstill computes it), so a test sees whether one was sent twice. A
batch is `validating` when made, `in_progress` at the first look, and ends at the next look
unless `held` is true (a test holds it running while it kills the client). Faults, each for
the next batches made: a line's status by `line_status(key, sent)` (500: it lands in the
error file), `expire` (the batch expires after answering `expire_answers` lines; the rest
are in the error file as `batch_expired`), `fail` (the batch fails validation), `bad_lines`
(the first output lines are cut short); `gone` batches are answered 404.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fault_server import completion

from potstill.models.base import ChatRequest
from potstill.models.callstore import request_key
from potstill.models.openai_backend import endpoint_identity

Reply = Callable[[dict[str, Any]], str]


def tokens(body: dict[str, Any], reply: str) -> tuple[int, int]:
    """Usage as a character count estimates it: fixed by the request and reply."""
    prompt = 3 + sum(4 + len(m["content"]) // 4 for m in body["messages"])
    return prompt, max(1, len(reply) // 4)


@dataclass
class BatchAPI:
    """Serve with `start_server(api.app)`, then set `api.base_url` to the URL it returns."""

    reply: Reply
    base_url: str = ""
    line_status: Callable[[str, int], int | None] | None = None
    expire: int = 0  # how many of the next batches expire
    expire_answers: int = 1
    fail: int = 0  # how many of the next batches fail validation
    bad_lines: int = 0  # output lines cut short, in the next batch made
    held: bool = False  # while true, batches stay in_progress
    sent: Counter[str] = field(default_factory=Counter)  # requests sent, per key
    online: Counter[str] = field(default_factory=Counter)  # of them, online
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    looks: Counter[str] = field(default_factory=Counter)  # retrieves per batch
    gone: set[str] = field(default_factory=set)  # batches it no longer has (404)
    app: FastAPI = field(init=False)
    _faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        app = FastAPI()
        self.app = app

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            key = self.key(body)
            with self._lock:
                self.sent[key] += 1
                self.online[key] += 1
            return self.answer(body)

        @app.post("/v1/files")
        async def upload(request: Request) -> Any:
            raw = await request.body()
            head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
            message = BytesParser(policy=default).parsebytes(head + raw)
            fields = {
                part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()
            }
            if fields.get("purpose") != b"batch":
                return JSONResponse({"error": {"message": "purpose must be batch"}}, 400)
            with self._lock:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = fields["file"]
            return self._file(file_id)

        @app.get("/v1/files/{file_id}/content")
        async def content(file_id: str) -> Any:
            if file_id not in self.files:
                return JSONResponse({"error": {"message": "no such file"}}, 404)
            return Response(self.files[file_id], media_type="application/octet-stream")

        @app.post("/v1/batches")
        async def create(request: Request) -> Any:
            body = await request.json()
            return self.create(body["input_file_id"], body["endpoint"], body["completion_window"])

        @app.get("/v1/batches/{batch_id}")
        async def retrieve(batch_id: str) -> Any:
            if batch_id not in self.batches or batch_id in self.gone:
                return JSONResponse({"error": {"message": "no such batch"}}, 404)
            self.looks[batch_id] += 1
            self.advance(batch_id)
            return self.batches[batch_id]

        @app.get("/v1/batches")
        async def listing() -> Any:
            data = list(reversed(self.batches.values()))
            return {"object": "list", "data": data, "has_more": False}

    # --- what a test reads -------------------------------------------------------------

    def key(self, body: dict[str, Any]) -> str:
        """The call-store key potstill gives this request body (a line's custom_id)."""
        request = ChatRequest(
            body["messages"], body["max_tokens"], body["temperature"], body.get("seed", 0)
        )
        return request_key(endpoint_identity(self.base_url, body["model"]), request)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self.reply(body)
        prompt, reply_tokens = tokens(body, text)
        return completion(body["model"], text, prompt, reply_tokens)

    def twice(self) -> list[str]:
        """Keys sent more than once."""
        return [k for k, n in self.sent.items() if n > 1]

    # --- batches -----------------------------------------------------------------------

    def _file(self, file_id: str) -> dict[str, Any]:
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(self.files[file_id]),
            "created_at": 0,
            "filename": "batch.jsonl",
            "purpose": "batch",
            "status": "processed",
        }

    def _new_file(self, text: str) -> str:
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = text.encode()
        return file_id

    def create(self, input_file_id: str, endpoint: str, window: str) -> dict[str, Any]:
        lines = [json.loads(line) for line in self.files[input_file_id].decode().splitlines()]
        with self._lock:
            batch_id = f"batch_{len(self.batches) + 1}"
            for line in lines:
                self.sent[line["custom_id"]] += 1
            fault: dict[str, Any] = {"lines": lines, "bad_lines": self.bad_lines}
            self.bad_lines = 0
            if self.fail:
                self.fail -= 1
                fault["fail"] = True
            elif self.expire:
                self.expire -= 1
                fault["expire"] = self.expire_answers
            self._faults[batch_id] = fault
            self.batches[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": endpoint,
                "errors": None,
                "input_file_id": input_file_id,
                "completion_window": window,
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": 0,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": None,
            }
        return self.batches[batch_id]

    def advance(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
            return
        if batch["status"] != "in_progress" or self.held:
            return
        fault = self._faults[batch_id]
        if fault.get("fail"):
            error = {"code": "invalid_request", "line": 1, "message": "bad model", "param": None}
            batch.update(status="failed", errors={"object": "list", "data": [error]})
            return
        out, err = [], []
        for n, line in enumerate(fault["lines"]):
            key = line["custom_id"]
            if "expire" in fault and n >= fault["expire"]:
                error = {"code": "batch_expired", "message": "This request could not be executed"}
                err.append({"id": f"req_{n}", "custom_id": key, "response": None, "error": error})
                continue
            status = self.line_status(key, self.sent[key]) if self.line_status else None
            if status is not None:
                body = {"error": {"message": f"injected {status}", "type": "server_error"}}
                result = {"status_code": status, "request_id": f"r{n}", "body": body}
                err.append({"id": f"req_{n}", "custom_id": key, "response": result, "error": None})
                continue
            result = {"status_code": 200, "request_id": f"r{n}", "body": self.answer(line["body"])}
            row = json.dumps(
                {"id": f"req_{n}", "custom_id": key, "response": result, "error": None}
            )
            out.append(row[: len(row) // 2] if len(out) < fault["bad_lines"] else row)
        batch["status"] = "expired" if "expire" in fault else "completed"
        batch["request_counts"]["completed"] = len(out) - fault["bad_lines"]
        batch["request_counts"]["failed"] = len(err)
        if out:
            batch["output_file_id"] = self._new_file("".join(r + "\n" for r in out))
        if err:
            batch["error_file_id"] = self._new_file("".join(json.dumps(r) + "\n" for r in err))
