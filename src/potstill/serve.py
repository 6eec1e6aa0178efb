"""`potstill serve`: an OpenAI-compatible endpoint for a local model (e.g. a distilled student).

Requests are batched continuously (`models/continuous.ContinuousBatcher`); `stream: true`
answers with server-sent events; `/health` answers while the scheduler runs. Every request is
checked before it costs anything: known roles only, finite sampling values in range,
`max_tokens` capped by the server's limit and the model's context, a prompt longer than the
context a 400, a full queue a 429; every error has OpenAI's shape. A client that disconnects
cancels its generation, and SIGTERM stops the server within seconds.

`serve RUN --student NAME` serves a trained student *for its task*: the client sends only the
input, the server asks it the way training did (`student_messages`) and returns the task's
parsed answer beside the text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# FastAPI reads handler annotations from this module: Request must be importable here.
from starlette.requests import Request

from potstill.models.continuous import (
    MAX_TOP_LOGPROBS,
    ContinuousBatcher,
    EngineStopped,
    Job,
    QueueFull,
    TokenEvent,
)
from potstill.models.local import LocalChatModel
from potstill.models.packaged import ModelRefError

# The most tokens one request may generate unless the server is started with another limit.
DEFAULT_MAX_TOKENS = 1024
# Seconds between looks at whether a client is still connected.
DISCONNECT_CHECK_S = 0.5
# No token is longer than this many characters, so a longer prompt needs no tokenizing.
MAX_CHARS_PER_TOKEN = 64
# Seeds are 64-bit, as torch's generators take them.
MAX_SEED = 2**63 - 1


class ServeError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}
        }


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    # Clients send many optional fields (user, metadata, ...); unknown ones are ignored.
    # No inf or nan anywhere: `temperature: NaN` is a 400, not a 500.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str | None = None
    messages: list[ChatMessage] = Field(default_factory=list)
    # Task-aware serving only: the input's fields, instead of a user message.
    inputs: dict[str, str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    seed: int | None = Field(None, ge=-MAX_SEED, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


@dataclass
class StudentTask:
    """What a task-aware server knows: the task, the prompt the student was trained with."""

    task: Any
    prompt: Any  # config.PromptConfig

    def messages(self, body: CompletionRequest) -> tuple[list[dict[str, str]], dict[str, str]]:
        """The training prompt for the client's input: `inputs`, or one user message holding
        the input (the task's only field, or a JSON object of its fields)."""
        inputs = body.inputs
        if inputs is None:
            users = [m for m in body.messages if m.role == "user"]
            if len(users) != 1 or len(body.messages) != 1:
                raise ServeError(
                    400,
                    "this server asks the student its task itself: send the input as one user "
                    f"message or as `inputs` with the field(s) {list(self.task.input_fields)}",
                    param="messages",
                )
            text = users[0].text()
            inputs = _fields_from_text(text, tuple(self.task.input_fields))
        missing = [f for f in self.task.input_fields if not inputs.get(f)]
        if missing:
            raise ServeError(400, f"inputs: missing field(s) {missing}", param="inputs")
        problem = self.task.check_inputs(inputs)
        if problem is not None:
            raise ServeError(400, f"inputs.{problem[0]}: {problem[1]}", param="inputs")
        # The one prompt builder training (`synth.stage.training_row`) and evaluation
        # (`tasks.base.chat_requests`) use, with the students' prompt, `synth.prompt`.
        return list(self.task.messages(inputs, self.prompt)), inputs

    def answer(self, text: str, inputs: dict[str, str]) -> dict[str, Any]:
        parsed = self.task.parse(text, self.prompt.style, inputs)
        return {"answer_status": parsed.status, "answer": parsed.answer}


def _fields_from_text(text: str, fields: tuple[str, ...]) -> dict[str, str]:
    if len(fields) == 1:
        return {fields[0]: text}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ServeError(
            400,
            f"this task has the input fields {list(fields)}: send them as `inputs` or as a "
            "JSON object in the user message",
            param="messages",
        )
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


class Server:
    """The state one app serves: the model, its scheduler, limits and an optional task."""

    def __init__(
        self,
        model: LocalChatModel,
        name: str,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_batch: int = 32,
        max_waiting: int = 64,
        api_key: str | None = None,
        student: StudentTask | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.max_tokens = max_tokens
        self.api_key = api_key
        self.student = student
        self.batcher = ContinuousBatcher(model, max_batch=max_batch, max_waiting=max_waiting)

    def job(self, body: CompletionRequest) -> tuple[Job, dict[str, str] | None]:
        """Check a request and make its job; a ServeError says why not."""
        if body.stop:
            raise ServeError(400, "stop sequences are not supported by this server", param="stop")
        if body.logprobs is False and body.top_logprobs is not None:
            raise ServeError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        inputs = None
        if self.student is not None:
            messages, inputs = self.student.messages(body)
            default_tokens, default_temperature = (
                self.student.prompt.max_tokens,
                self.student.prompt.temperature,
            )
        else:
            if body.inputs is not None:
                raise ServeError(
                    400, "`inputs` needs a task-aware server (--student)", param="inputs"
                )
            if not body.messages:
                raise ServeError(400, "messages: at least one message is needed", param="messages")
            messages = [
                {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in body.messages
            ]
            default_tokens, default_temperature = 256, 0.0
        from potstill.models.tokens import chat_token_ids

        context = self.batcher.context_length
        chars = sum(len(m["content"]) for m in messages)
        if chars > MAX_CHARS_PER_TOKEN * context:
            # Too long whatever the tokenizer makes of it: refused before tokenizing.
            raise ServeError(
                400,
                f"the prompt has {chars} characters; this model's context is {context} tokens",
                param="messages",
            )
        prompt = chat_token_ids(self.model.tokenizer, messages)
        if len(prompt) >= context:
            raise ServeError(
                400,
                f"the prompt has {len(prompt)} tokens; this model's context is {context} tokens",
                param="messages",
            )
        asked = body.max_completion_tokens or body.max_tokens or default_tokens
        temperature = default_temperature if body.temperature is None else body.temperature
        job = Job(
            prompt=prompt,
            max_tokens=min(asked, self.max_tokens, context - len(prompt)),
            temperature=temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        )
        return job, inputs

    def token_logprobs(self, event: TokenEvent) -> dict[str, Any]:
        def entry(token: int, logprob: float) -> dict[str, Any]:
            text = self.model.tokenizer.decode([token])
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        item = entry(event.token or 0, event.logprob or 0.0)
        item["top_logprobs"] = [entry(t, lp) for t, lp in event.top or []]
        return item


async def _events(job: Job, disconnected: Any) -> AsyncIterator[TokenEvent]:
    """A job's events as they come; the job is cancelled when the client goes away (looked
    at twice a second, whether tokens are coming or not)."""
    checked = time.monotonic()
    try:
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=DISCONNECT_CHECK_S)
            except TimeoutError:
                event = None
            if disconnected is not None and time.monotonic() - checked >= DISCONNECT_CHECK_S:
                checked = time.monotonic()
                if await disconnected():
                    return
            if event is None:
                continue
            yield event
            if event.finish is not None:
                return
    finally:
        job.cancel()  # a no-op for a finished job; stops one whose client left


def create_app(
    model: LocalChatModel,
    name: str,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_batch: int = 32,
    max_waiting: int = 64,
    api_key: str | None = None,
    student: StudentTask | None = None,
) -> Any:
    """The FastAPI app serving `/health`, `/v1/models` and `/v1/chat/completions`."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    server = Server(
        model,
        name,
        max_tokens=max_tokens,
        max_batch=max_batch,
        max_waiting=max_waiting,
        api_key=api_key,
        student=student,
    )

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        server.batcher.start()
        try:
            yield
        finally:
            server.batcher.stop()

    app = FastAPI(title="potstill serve", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ServeError)
    async def refused(_request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_error(exc.errors()).body(), status_code=400)

    def guard(request: Request) -> None:
        # A dependency, not a middleware: Starlette's HTTP middleware hides a client's
        # disconnect from the handler, and a disconnect must cancel the generation.
        if server.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {server.api_key}".encode()):
            raise ServeError(401, "missing or wrong API key", "authentication_error")

    keyed = [Depends(guard)]

    @app.get("/health")
    async def health() -> JSONResponse:
        running, waiting = server.batcher.load()
        ok = server.batcher.error is None and server.batcher._thread.is_alive()
        body = {"status": "ok" if ok else "failed", "running": running, "waiting": waiting}
        if server.batcher.error:
            body["error"] = server.batcher.error
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/models", dependencies=keyed)
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "potstill"}],
        }

    @app.post("/v1/chat/completions", dependencies=keyed)
    async def chat(request: Request) -> Any:
        try:
            raw = await request.json()
        except ValueError:
            raise ServeError(400, "the request body is not JSON") from None
        try:
            body = CompletionRequest.model_validate(raw)
        except ValidationError as exc:
            raise _validation_error(exc.errors()) from None
        job, inputs = server.job(body)
        try:
            server.batcher.submit(job)
        except QueueFull as exc:
            raise ServeError(429, str(exc), "rate_limit_error") from None
        except EngineStopped as exc:
            raise ServeError(503, str(exc), "server_error") from None
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            # Starlette ends a stream whose client left (the next send fails, and the
            # stream's `finally` cancels the job); polling is_disconnected there misreads.
            events = _events(job, None)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(server, job, inputs, events, ident, created, body.logprobs, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        content: list[dict[str, Any]] = []
        finish = "error"
        async for event in _events(job, request.is_disconnected):
            if event.error:
                raise ServeError(500, event.error, "server_error")
            if event.token is not None and body.logprobs and event.finish != "stop":
                content.append(server.token_logprobs(event))
            if event.finish:
                finish = event.finish
        if finish == "cancelled":
            return JSONResponse({}, status_code=499)
        text = model.tokenizer.decode(job.tokens, skip_special_tokens=True)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if server.student is not None and inputs is not None:
            message.update(server.student.answer(text, inputs))
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": finish,
            "message": message,
            "logprobs": {"content": content, "refusal": None} if body.logprobs else None,
        }
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": name,
            "choices": [choice],
            "usage": _usage(job, finish),
        }

    return app


def _usage(job: Job, finish: str) -> dict[str, int]:
    completion = len(job.tokens) + (finish == "stop")
    return {
        "prompt_tokens": len(job.prompt),
        "completion_tokens": completion,
        "total_tokens": len(job.prompt) + completion,
    }


def _validation_error(errors: Any) -> ServeError:
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return ServeError(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where)


async def _stream(
    server: Server,
    job: Job,
    inputs: dict[str, str] | None,
    events: AsyncIterator[TokenEvent],
    ident: str,
    created: int,
    logprobs: bool,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events as OpenAI sends them: a role chunk, content deltas, a finish chunk,
    optionally a usage chunk, then `[DONE]`."""
    tokenizer = server.model.tokenizer

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        choice.update(extra)
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": server.name,
            "choices": [choice],
        }
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        sent = ""
        finish = "error"
        async for event in events:
            if event.error:
                error = ServeError(500, event.error, "server_error")
                yield f"data: {json.dumps(error.body())}\n\n"
                return
            if event.finish:
                finish = event.finish
            if event.token is None or event.finish == "stop":
                continue
            text = tokenizer.decode(job.tokens, skip_special_tokens=True)
            # A token that ends inside a UTF-8 character waits for the rest of it.
            delta = "" if text.endswith("\ufffd") else text[len(sent) :]
            extra: dict[str, Any] = {}
            if logprobs:
                extra["logprobs"] = {"content": [server.token_logprobs(event)], "refusal": None}
            if delta or extra:
                sent += delta
                yield chunk({"content": delta} if delta else {}, **extra)
        if finish == "cancelled":
            return
        text = tokenizer.decode(job.tokens, skip_special_tokens=True)
        extra = {}
        if server.student is not None and inputs is not None:
            extra = server.student.answer(text, inputs)
        yield chunk({"content": text[len(sent) :]} if text != sent else {}, finish, **extra)
        if include_usage:
            usage = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": server.name,
                "choices": [],
                "usage": _usage(job, finish),
            }
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # the client left mid-stream: stop generating for it


class ServeSetupError(ModelRefError):
    """A serve command that cannot start: an unset API key variable."""


def student_server(run_dir: Path, student: str) -> tuple[str, StudentTask]:
    """The trained student's model folder and its task, from a run folder; the student is
    chosen and checked as `potstill export` does (`export.trained_student`)."""
    from potstill.export import trained_student
    from potstill.runs import RunFolder
    from potstill.tasks import build_task

    run = RunFolder(run_dir)
    config = run.load_config()
    chosen = trained_student(run, config, student)
    final = run.student_dir(chosen.name) / "final"
    return str(final), StudentTask(build_task(config.task), config.synth.prompt)


def read_api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ServeSetupError(f"--api-key-env {variable}: the environment variable is not set")
    return key


def serve(
    ref: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    *,
    student: str | None = None,
    api_key_env: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_batch: int = 32,
    max_waiting: int = 64,
) -> None:
    """Serve `ref` (a model folder, packaged:NAME, a hub id; with `student`, a run folder)
    until SIGINT or SIGTERM; open streams get two seconds to finish."""
    import uvicorn

    api_key = read_api_key(api_key_env)
    task = None
    if student is not None:
        ref, task = student_server(Path(ref), student)
        name = name or student
    model = LocalChatModel(ref, batch_size=1)
    app = create_app(
        model,
        name or ref,
        max_tokens=max_tokens,
        max_batch=max_batch,
        max_waiting=max_waiting,
        api_key=api_key,
        student=task,
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_graceful_shutdown=2
    )
    uvicorn.Server(config).run()
