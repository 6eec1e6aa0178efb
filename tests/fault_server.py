"""A fault-injecting OpenAI-compatible server for tests, on 127.0.0.1 only.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) over a raw asyncio socket
server, so it can misbehave the way real endpoints and proxies do, below what an ASGI app can
express: reset the connection, send a truncated body, hang past the client's timeout.

Faults are chosen per request, either by a script `(key, attempt) -> fault or None` or at
random with probability `rate` (seeded by request key and attempt, so the same run meets the
same faults whatever the order of concurrent requests). `key` identifies the question (a
hash of the model and messages; with `store_keys`, the key potstill's call store gives the
call); `attempt` counts from 1 per key.

It is the one fake OpenAI-compatible endpoint of the tests: the answers are whatever `reply`
writes (a scripted teacher or judge), it records what it was sent (bodies, bearer keys, the
tokens it reported), and it can SIGKILL its client once it has answered a given number of
requests. Other stand-ins in the tests serve other APIs (tests/batch_api.py: the batch files
API; the hub and grading stand-ins).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every fault the server can inject. "length" and "slow" still answer (a cut reply with
# finish_reason "length"; a reply after `slow_s`); the others give no usable answer.
FAULTS = (
    "429",  # with Retry-After
    "429_bare",  # without Retry-After
    "500",
    "502",
    "503",
    "hang",  # no reply until after the client's timeout
    "reset",  # the connection is dropped without a reply
    "truncated",  # a 200 whose body stops half-way
    "not_json",  # a 200 with an HTML body
    "empty_choices",  # a 200 with "choices": []
    "length",  # a 200 cut short: finish_reason "length"
    "slow",  # a 200 after a delay
)
ANSWERING = frozenset({"length", "slow"})
# Faults a script may also name (never drawn at random): any other HTTP status as digits
# ("400", "401", "403", ...) is an error of that status with a JSON body.
SCRIPTED = (
    "quota",  # 429 insufficient_quota: the account's credit is spent
    "proxy_page",  # a 502 whose body is a proxy's plain-text page
    "bad_usage",  # a 200 whose usage.prompt_tokens is not a number
)

Script = Callable[[str, int], "str | None"]
Reply = Callable[[dict[str, Any]], str]
# (request body, reply text) -> the choice's `logprobs.content`, or None to send none.
Logprobs = Callable[[dict[str, Any], str], "list[dict[str, Any]] | None"]
# (request body, reply text) -> the (prompt, completion) tokens the reply's usage reports.
Tokens = Callable[[dict[str, Any], str], tuple[int, int]]


def logprob_content(
    tokens: list[str], alternatives: list[str], k: int, chosen: float = -0.1
) -> list[dict[str, Any]]:
    """OpenAI's `logprobs.content` for a reply cut into `tokens`: each token with logprob
    `chosen`, then up to k-1 of `alternatives` (other than it) at -2, -3, ..."""
    content = []
    for token in tokens:
        others = [a for a in alternatives if a != token][: k - 1]
        top = [{"token": token, "logprob": chosen, "bytes": list(token.encode())}]
        top += [
            {"token": a, "logprob": -2.0 - j, "bytes": list(a.encode())}
            for j, a in enumerate(others)
        ]
        content.append({**top[0], "top_logprobs": top})
    return content


def completion(
    model: str,
    content: str,
    prompt_tokens: int | None = 20,
    completion_tokens: int = 5,
    finish_reason: str = "stop",
    completion_id: str = "x",
) -> dict[str, Any]:
    """An OpenAI chat-completion body with one choice (usage left out when prompt_tokens is
    None), as every fake endpoint in the tests answers."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": content},
            }
        ],
    }
    if prompt_tokens is not None:
        total = prompt_tokens + completion_tokens
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total,
        }
    return body


def request_key(body: dict[str, Any]) -> str:
    """Which question a request asks: its model and messages (not its sampling settings)."""
    raw = json.dumps([body.get("model"), body.get("messages")], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def store_key(base_url: str, model: str, request: Any) -> str:
    """The call-store key a client of the endpoint at `base_url` gives `request` for `model`."""
    from potstill.models.callstore import request_key as call_key
    from potstill.models.openai_backend import endpoint_identity

    return call_key(endpoint_identity(base_url, model), request)


@dataclass
class FaultServer:
    """Serve `reply(body) -> text` as chat completions, with faults. Start with `start()`."""

    reply: Reply
    script: Script | None = None
    rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    seed: int = 0
    hang_s: float = 3.0
    slow_s: float = 0.2
    retry_after_s: float = 0.05
    # Error bodies quote the request's bearer key, as some real endpoints do ("Incorrect API
    # key provided: sk-..."), so a test can check that the client redacts it.
    echo_key: bool = False
    # When set, every request after the first `gate_after` waits for this event before it is
    # answered (a test holds calls in flight with it).
    gate: threading.Event | None = None
    gate_after: int = 0
    # When set, a request that asks for logprobs gets `logprobs(body, text)` in its choice.
    logprobs: Logprobs | None = None
    # The tokens each answer's usage reports; 20 prompt and 5 completion tokens when unset.
    tokens: Tokens | None = None
    # Seconds every answer takes (faults that answer at once are not delayed).
    latency_s: float = 0.0
    # Key requests as potstill's call store does (model identity at this URL, messages,
    # sampling, sample index), so `attempts` and `answered` compare with calls.sqlite.
    store_keys: bool = False
    url: str = ""
    # What happened, per request: (monotonic time, key, attempt, fault or "ok").
    log: list[tuple[float, str, int, str]] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    # Answers delivered in full (a "length" or "slow" fault still delivers one), per key.
    answered: Counter[str] = field(default_factory=Counter)
    # What was sent: each request's body and bearer key, in arrival order.
    bodies: list[dict[str, Any]] = field(default_factory=list)
    api_keys: list[str] = field(default_factory=list)
    # The bearer key of the request whose reply `reply` is writing now (set just before it is
    # called, on the server's one thread), for a reply that quotes it back.
    asking_key: str = ""
    # (body, prompt tokens, completion tokens) of every answer, as its usage reported them.
    usage: list[tuple[dict[str, Any], int, int]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    # One record per SIGKILL sent (see `kill_after`): the keys answered and committed then.
    kills: list[dict[str, set[str]]] = field(default_factory=list)
    connections: int = 0
    _kill_at: tuple[int, int, Path, float] | None = None
    _holding: bool = False
    _release: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what a test reads -------------------------------------------------------------

    def injected(self) -> Counter[str]:
        """How many times each fault was injected."""
        return Counter(fault for *_, fault in self.log if fault != "ok")

    def usage_of(self, which: Callable[[dict[str, Any]], bool]) -> list[tuple[int, int]]:
        """(prompt, completion) tokens of the answers given to requests `which` picks."""
        return [(p, c) for body, p, c in self.usage if which(body)]

    def key_of(self, request: Any, model: str) -> str:
        """The key of a potstill `ChatRequest` for `model`, as this server keys it."""
        if self.store_keys:
            return store_key(self.url, model, request)
        return request_key({"model": model, "messages": request.messages})

    def key(self, body: dict[str, Any]) -> str:
        if not self.store_keys:
            return request_key(body)
        from potstill.models.base import ChatRequest

        request = ChatRequest(
            body["messages"], body["max_tokens"], body["temperature"], body.get("seed", 0)
        )
        return store_key(self.url, body["model"], request)

    def choose(self, key: str, attempt: int) -> str | None:
        if self.script is not None:
            return self.script(key, attempt)
        rng = random.Random(f"{self.seed}:{key}:{attempt}")
        return rng.choice(self.faults) if rng.random() < self.rate else None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> str:
        """Start in a daemon thread; returns the /v1 base URL."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0)
            )
            port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}/v1"
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault server did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        loop, server = self._loop, self._server

        async def close() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # --- HTTP ----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                path, body, key = request
                keep = await self._respond(path, body, writer, key)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping
        finally:
            if not writer.is_closing():
                writer.close()

    async def _respond(
        self, path: str, raw: bytes, writer: asyncio.StreamWriter, api_key: str = ""
    ) -> bool:
        """Answer one request; False when the connection must be dropped."""
        if not path.endswith("/chat/completions"):
            _send(writer, 404, b'{"error": {"message": "not found"}}')
            return True
        body = json.loads(raw)
        key = self.key(body)
        with self._lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
            self.bodies.append(body)
            self.api_keys.append(api_key)
        fault = self.choose(key, attempt)
        with self._lock:
            self.log.append((time.monotonic(), key, attempt, fault or "ok"))
            held = self.gate is not None and len(self.log) > self.gate_after
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if held and self.gate is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.gate.wait)
            return await self._answer(body, key, attempt, fault, writer, api_key)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(
        self,
        body: dict[str, Any],
        key: str,
        attempt: int,
        fault: str | None,
        writer: asyncio.StreamWriter,
        api_key: str,
    ) -> bool:
        quoted = f" (key {api_key})" if self.echo_key else ""
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            writer.transport.abort()
            return False
        if fault == "reset":
            writer.transport.abort()
            return False
        if fault in ("429", "429_bare"):
            headers = {"Retry-After": f"{self.retry_after_s}"} if fault == "429" else {}
            error = {"error": {"message": "rate limited" + quoted, "type": "rate_limit_exceeded"}}
            _send(writer, 429, json.dumps(error).encode(), headers)
            return True
        if fault == "quota":
            message = "You exceeded your current quota" + quoted
            error = {"error": {"message": message, "type": "insufficient_quota"}}
            error["error"]["code"] = "insufficient_quota"
            _send(writer, 429, json.dumps(error).encode())
            return True
        if fault is not None and fault.isdigit():
            kind = "server_error" if fault.startswith("5") else "invalid_request_error"
            error = {"error": {"message": f"upstream error {fault}{quoted}", "type": kind}}
            _send(writer, int(fault), json.dumps(error).encode())
            return True
        if fault == "proxy_page":
            _send(writer, 502, f"bad gateway{quoted}".encode(), content_type="text/plain")
            return True
        if fault == "not_json":
            # With echo_key the key straddles the 80th character, where a quote of the body
            # in an error message is cut.
            page = f"<html>{'.' * 60}{quoted}</html>" if quoted else "<html>Bad gateway</html>"
            _send(writer, 200, page.encode(), content_type="text/html")
            return True
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self._holding:  # a kill is coming: nothing more is answered
            while not self._release.is_set():
                await asyncio.sleep(0.01)
            _send(writer, 503, b'{"error": {"message": "gone"}}')
            return True
        self.asking_key = api_key
        text = self.reply(body)
        finish = "stop"
        if fault == "length":
            text, finish = text[: max(1, len(text) // 2)], "length"
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        prompt_tokens, completion_tokens = self.tokens(body, text) if self.tokens else (20, 5)
        answer = completion(
            body.get("model", ""),
            text,
            prompt_tokens,
            completion_tokens,
            finish_reason=finish,
            completion_id=f"chatcmpl-{key}-{attempt}",
        )
        if fault == "bad_usage":  # int() of this field fails, and its error quotes the field
            answer["usage"]["prompt_tokens"] = f"many{quoted}"
        if self.logprobs is not None and body.get("logprobs") and answer["choices"]:
            content = self.logprobs(body, text)
            if content is not None:
                answer["choices"][0]["logprobs"] = {"content": content}
        if fault == "empty_choices":
            answer["choices"] = []
        payload = json.dumps(answer).encode()
        if fault == "truncated":
            head = _head(200, len(payload), {}, "application/json")
            writer.write(head + payload[: len(payload) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        # Counted before the client can read the reply, so a test that has the reply in hand
        # always sees it counted; taken back if the client is gone before it is sent.
        whole = fault in (None, *ANSWERING)
        if whole:
            with self._lock:
                self.answered[key] += 1
                self.usage.append((body, prompt_tokens, completion_tokens))
            self._kill_when_due()
        try:
            _send(writer, 200, payload)
            await writer.drain()
        except ConnectionError:
            if whole:
                with self._lock:
                    self.answered[key] -= 1
            raise
        return True

    # --- killing the client --------------------------------------------------------------

    def kill_after(self, answered: int, pid: int, calls_db: Path, within_s: float = 2.0) -> None:
        """SIGKILL `pid` once `answered` requests are answered in all: stop answering, wait
        until every answer given is committed to `calls_db` (`within_s` at most), then kill.

        Keep `within_s` below the time a client needs to give up on the held calls, so a
        client that commits only when a whole batch is done cannot pass."""
        self._release.clear()
        self._holding = False
        self._kill_at = (answered, pid, calls_db, within_s)

    def _kill_when_due(self) -> None:
        if self._kill_at and sum(self.answered.values()) >= self._kill_at[0]:
            self._holding = True
            asyncio.get_running_loop().create_task(self._kill_when_committed())

    async def _kill_when_committed(self) -> None:
        assert self._kill_at is not None
        _, pid, calls_db, within_s = self._kill_at
        self._kill_at = None
        answered = set(self.answered)
        deadline = time.monotonic() + within_s
        committed: set[str] = set()
        while time.monotonic() < deadline:
            with sqlite3.connect(f"file:{calls_db}?mode=ro", uri=True) as db:
                committed = {k for (k,) in db.execute("SELECT key FROM calls")}
            if answered <= committed:
                break
            await asyncio.sleep(0.02)
        self.kills.append({"answered": answered, "committed": committed})
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)  # let the killed client's sockets close first
        self._holding = False
        self._release.set()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes, str] | None:
    """The path, body and bearer key of the next request; None when the client is gone."""
    line = await reader.readline()
    if not line:
        return None
    _, path, _ = line.decode("latin-1").split(" ", 2)
    length, key = 0, ""
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        if name.strip().lower() == "authorization":
            key = value.strip().removeprefix("Bearer ")
    return path, await reader.readexactly(length), key


def _head(status: int, length: int, headers: dict[str, str], content_type: str) -> bytes:
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {length}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _send(
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> None:
    writer.write(_head(status, len(payload), headers or {}, content_type) + payload)
