"""The teacher in batch mode (`teacher.model.mode: batch`): the synth stage's calls through
an OpenAI-style Batch API (OpenAI, Azure OpenAI; the same JSONL as `vllm run-batch`).

The requests not yet answered become JSONL lines `{"custom_id": <call-store key>, "method":
"POST", "url": ..., "body": <the online request's body>}`, split under the endpoint's limits
(`batch.max_requests_per_file`, `batch.max_file_bytes`). Each part is uploaded (`POST /files`,
purpose `batch`) and made a batch (`POST /batches`); every batch is polled until it ends and
its output and error files are read (`GET /files/{id}/content`). An answer is keyed by its
`custom_id`, so it lands in calls.sqlite exactly as an online answer does.

The run folder's `synth/batches.json` records each batch before anything waits on it: the
input file's id once uploaded, the batch's id once created. A killed run re-attaches to the
batches it recorded instead of sending their requests again: a file recorded without a batch
id is looked for among the endpoint's batches (the process may have died between creating the
batch and writing its id) before a batch is made of it. Failed lines (server errors, lines an
expired batch never ran, lines missing from the output) are sent again as a smaller batch, up
to `batch.retry_rounds` times in one run; what still fails is a failed call of the stage
(errors.jsonl, exit code 3), sent again in a new batch by the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from potstill.config import ModelConfig
from potstill.files import atomic_write_bytes, read_json, write_json
from potstill.models.base import Admit, ChatRequest, ChatResponse
from potstill.models.callstore import request_key
from potstill.models.openai_backend import (
    BadReply,
    EndpointRefused,
    OpenAIChatModel,
    chat_body,
    classify,
    endpoint_identity,
    read_reply,
    redact,
)
from potstill.progress import duration, say

# A batch in one of these states is over; the others (validating, in_progress, finalizing,
# cancelling) are waited on. ("gone": one the endpoint no longer has, potstill's own word.)
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
STATE_VERSION = 1


class BatchFailed(EndpointRefused):
    """The endpoint failed a batch without running it, or cannot be reached about one:
    the stage stops with what to do (answers already stored are kept)."""


def request_line(model: str, url: str, key: str, request: ChatRequest) -> bytes:
    """One line of a batch input file: the request under its call-store key."""
    line = {"custom_id": key, "method": "POST", "url": url, "body": chat_body(model, request)}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def split_lines(lines: Sequence[bytes], max_requests: int, max_bytes: int) -> list[list[int]]:
    """Indices of `lines`, in order, in parts of at most `max_requests` lines and
    `max_bytes` bytes each; ValueError for a line that fits in no file."""
    parts: list[list[int]] = []
    size = 0
    for i, line in enumerate(lines):
        if len(line) > max_bytes:
            raise ValueError(
                f"one batch request is {len(line)} bytes, more than "
                f"teacher.model.batch.max_file_bytes ({max_bytes})"
            )
        if not parts or len(parts[-1]) >= max_requests or size + len(line) > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(i)
        size += len(line)
    return parts


@dataclass
class Result:
    """What a batch said about one request."""

    response: ChatResponse
    retryable: bool = False


def _failure(kind: str, message: str, retryable: bool, attempts: int) -> Result:
    response = ChatResponse(None, "error", error=message, error_kind=kind, attempts=attempts)
    return Result(response, retryable)


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def read_results(
    output: str, errors: str, secret: str | None, attempts: int
) -> tuple[dict[str, Result], list[str]]:
    """A batch's output and error files as a Result per custom_id, and a note for each line
    that is no batch result (its request then has no Result, and is sent again)."""
    results: dict[str, Result] = {}
    notes: list[str] = []
    for name, text in (("output", output), ("error", errors)):
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                key = line["custom_id"]
                if not isinstance(key, str):
                    raise TypeError("custom_id is not a string")
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                shown = redact(raw, secret)[:80]
                notes.append(
                    f"line {number} of the {name} file is no batch result ({exc}): {shown!r}"
                )
                continue
            results[key] = _result(line, secret, attempts)
    return results, notes


def _result(line: dict[str, Any], secret: str | None, attempts: int) -> Result:
    error = line.get("error")
    response = line.get("response")
    if isinstance(error, dict) and error:
        code = str(error.get("code") or "error")
        message = redact(str(error.get("message") or code), secret)
        kind = code if code.startswith("batch_") else f"batch_{code}"
        # A line the batch never ran (it expired, or was cancelled) may run in the next one.
        retryable = code in ("batch_expired", "batch_cancelled")
        return _failure(kind, f"{kind}: {message}", retryable, attempts)
    if error and not isinstance(error, dict):  # `vllm run-batch` writes the error as text
        status = response.get("status_code") if isinstance(response, dict) else None
        kind = f"http_{status}" if isinstance(status, int) else "batch_error"
        text = redact(str(error), secret)[:500]
        return _failure(kind, f"{kind} in a batch: {text}", False, attempts)
    if not isinstance(response, dict):
        return _failure("bad_response", "a batch result without a response", True, attempts)
    status = response.get("status_code")
    body = response.get("body")
    if status == 200:
        try:
            answer = read_reply(body, secret, 0.0)
        except BadReply as exc:
            return _failure("bad_response", str(exc), True, attempts)
        answer.attempts = attempts
        return Result(answer)
    detail = body.get("error") if isinstance(body, dict) else None
    said = detail.get("message") if isinstance(detail, dict) else None
    status_code = int(status) if isinstance(status, int) else 0
    text = redact(str(said or body), secret)[:500]
    return _failure(
        f"http_{status_code}",
        f"http_{status_code} in a batch: {text}",
        _retryable_status(status_code),
        attempts,
    )


class BatchLog:
    """synth/batches.json: every batch this run folder submitted, in order; written whole
    (atomically) before anything waits on a batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.exists():
            self.records = list(read_json(path).get("batches", []))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"version": STATE_VERSION, "batches": self.records})


class _Folder:
    """`batch.folder`: the files and batches endpoints as a folder the user runs batches
    in. An input file is `<batch id>.input.jsonl`; its batch has ended when
    `<batch id>.output.jsonl` (what `vllm run-batch -o` writes: answers and errors alike)
    holds a whole line per request. Ids are the input's digest, so the same file is the
    same batch."""

    def __init__(self, folder: Path, model: str) -> None:
        self.folder, self.model = folder, model
        self.files, self.batches = self, self

    async def __aenter__(self) -> _Folder:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def _paths(self, batch_id: str) -> tuple[Path, Path]:
        return self.folder / f"{batch_id}.input.jsonl", self.folder / f"{batch_id}.output.jsonl"

    async def create(self, **args: Any) -> SimpleNamespace:
        if "file" in args:  # files.create
            name: str = args["file"][0]
            data: bytes = args["file"][1]
            # The name holds the round, so a retry of the same lines is a batch of its own.
            digest = hashlib.sha256(name.encode() + b"\0" + data).hexdigest()[:20]
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self._paths(f"batch-{digest}")[0], data)
            return SimpleNamespace(id=f"file-{digest}")
        batch = await self.retrieve(f"batch-{args['input_file_id'].removeprefix('file-')}")
        assert batch is not None  # its input file was written by files.create
        return batch

    async def retrieve(self, batch_id: str) -> SimpleNamespace | None:
        source, output = self._paths(batch_id)
        if not source.exists():
            return None
        total = source.read_bytes().count(b"\n")
        done = output.read_bytes().count(b"\n") if output.exists() else 0
        status = "completed" if done >= total else "in_progress"
        return SimpleNamespace(
            id=batch_id,
            input_file_id=f"file-{batch_id.removeprefix('batch-')}",
            status=status,
            output_file_id=f"out-{batch_id}" if status == "completed" else None,
            error_file_id=None,
            request_counts=SimpleNamespace(completed=done, failed=0, total=total),
            errors=None,
            hint=f"run it, e.g. `vllm run-batch -i {source} -o {output} --model {self.model}`; "
            f"potstill waits for {output}",
        )

    async def list(self, limit: int = 100) -> SimpleNamespace:
        found = [
            await self.retrieve(p.name.split(".")[0]) for p in self.folder.glob("*.input.jsonl")
        ]
        return SimpleNamespace(data=[b for b in found if b is not None])

    async def content(self, file_id: str) -> SimpleNamespace:
        output = self._paths(file_id.removeprefix("out-"))[1]
        return SimpleNamespace(text=output.read_text(encoding="utf-8", errors="replace"))


class BatchChatModel:
    """The teacher through a Batch API; answers as a `StreamingChatModel`: each batch's
    answers are handed over when the batch ends, so the call store commits them then."""

    def __init__(
        self,
        config: ModelConfig,
        log_path: Path,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        # The online backend holds the key rule, the client and the retry policy.
        self.endpoint = OpenAIChatModel(
            model=config.model,
            base_url=config.base_url,
            api_key_env=config.api_key_env,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            retry_max_wait_s=config.retry_max_wait_s,
            retry_total_s=config.retry_total_s,
        )
        self.settings = config.batch
        self.log_path = log_path
        self._sleep = sleep
        # Progress: when this process began waiting on each batch, and what it last showed.
        self._since: dict[str, float] = {}
        self._shown: dict[str, tuple[Any, ...]] = {}
        self._last_line = 0.0

    @property
    def identity(self) -> str:
        return endpoint_identity(self.endpoint.base_url, self.endpoint.model)

    @property
    def _secret(self) -> str | None:
        return self.endpoint._key

    # --- calls to the files and batches endpoints, with the endpoint's retry policy ------

    async def _control(
        self, what: str, call: Callable[[], Awaitable[Any]], gone_ok: bool = False
    ) -> Any:
        """One call to the files or batches endpoints, retried as a chat call is; with
        `gone_ok`, None when the endpoint no longer has the batch or file (404)."""
        from openai import OpenAIError

        policy = self.endpoint.policy
        first = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except OpenAIError as exc:
                failure = classify(exc)
            message = redact(failure.message, self._secret)
            where = self.endpoint.base_url or "default"
            if gone_ok and failure.kind == "http_404":
                return None
            if failure.fatal:
                raise EndpointRefused(
                    f"the endpoint {where} refused to {what} ({failure.kind}); stopping, no "
                    f"retry can help: {message}"
                )
            delay = self.endpoint.policy.delay(attempt, failure.retry_after, self.endpoint._rng)
            spent = time.monotonic() - first
            if (
                not failure.retryable
                or attempt >= policy.attempts
                or spent + delay > policy.total_s
            ):
                raise BatchFailed(
                    f"could not {what} at {where} ({failure.kind} after {attempt} attempt(s)): "
                    f"{message}. Batches already submitted keep running and are recorded in "
                    f"{self.log_path}; run `potstill synth {self._run_root()}` again to "
                    "re-attach to them"
                )
            await self._sleep(delay)

    def _client(self) -> Any:
        """The endpoint's files and batches, or the folder the user runs batches in."""
        if self.settings.folder is None:
            return self.endpoint._client()
        return _Folder(self._run_root() / self.settings.folder, self.endpoint.model)

    def _run_root(self) -> Path:
        return self.log_path.parent.parent

    async def _find_batch(self, client: Any, file_id: str) -> Any | None:
        """The endpoint's batch made of this input file, if there is one."""
        page = await self._control("list batches", lambda: client.batches.list(limit=100))
        for batch in page.data:
            if batch.input_file_id == file_id:
                return batch
        return None

    async def _create(
        self, client: Any, record: dict[str, Any], log: BatchLog, uploaded_now: bool
    ) -> None:
        """Make the recorded input file a batch, unless the endpoint has one of it already
        (a create whose reply was lost, or a process killed before it wrote the id)."""
        from openai import OpenAIError

        file_id = record["input_file_id"]
        found = None if uploaded_now else await self._find_batch(client, file_id)
        earlier = found is not None
        attempt = 0
        while found is None:
            attempt += 1
            try:
                found = await client.batches.create(
                    input_file_id=file_id,
                    endpoint=self.settings.url,
                    completion_window=self.settings.completion_window,
                    metadata={"potstill": "synth"},
                )
            except OpenAIError as exc:
                failure = classify(exc)
                message = redact(failure.message, self._secret)
                if (
                    failure.fatal
                    or not failure.retryable
                    or attempt >= self.endpoint.policy.attempts
                ):
                    raise BatchFailed(
                        f"the endpoint refused to make a batch of the uploaded file {file_id} "
                        f"({failure.kind}): {message}. Fix what it names and run `potstill "
                        f"synth {self._run_root()}` again"
                    ) from None
                delay = self.endpoint.policy.delay(attempt, failure.retry_after, self.endpoint._rng)
                await self._sleep(delay)
                # The batch may have been made although its reply was lost.
                found = await self._find_batch(client, file_id)
        record["batch_id"] = found.id
        record["status"] = found.status
        log.save()
        if earlier:
            say(
                f"batch {found.id}: re-attached (made of file {file_id} by an earlier run, "
                f"{len(record['keys'])} request(s))"
            )
        else:
            say(
                f"batch {found.id}: {len(record['keys'])} request(s) submitted (round "
                f"{record['round']}); waiting for it (a killed run re-attaches to it)"
            )
        if getattr(found, "hint", None):
            say(f"batch {found.id}: {found.hint}")

    async def _submit(
        self,
        client: Any,
        log: BatchLog,
        keys: list[str],
        requests: dict[str, ChatRequest],
        round_: int,
    ) -> list[dict[str, Any]]:
        """Upload and create the batches for `keys`; each recorded before the next step."""
        lines = [request_line(self.endpoint.model, self.settings.url, k, requests[k]) for k in keys]
        try:
            parts = split_lines(
                lines, self.settings.max_requests_per_file, self.settings.max_file_bytes
            )
        except ValueError as exc:
            raise BatchFailed(str(exc)) from None
        records = []
        for part in parts:
            data = b"".join(lines[i] for i in part)
            uploaded = await self._control(
                "upload a batch input file",
                partial(
                    client.files.create,
                    file=(f"potstill-batch-round{round_}.jsonl", data, "application/jsonl"),
                    purpose="batch",
                ),
            )
            record: dict[str, Any] = {
                "round": round_,
                "input_file_id": uploaded.id,
                "batch_id": None,
                "status": "uploaded",
                "output_file_id": None,
                "error_file_id": None,
                "failed": None,
                "created": time.time(),
                "keys": [keys[i] for i in part],
            }
            log.records.append(record)
            log.save()
            await self._create(client, record, log, uploaded_now=True)
            records.append(record)
        return records

    async def _download(self, client: Any, file_id: str | None) -> str:
        if not file_id:
            return ""
        content = await self._control(
            f"download file {file_id}", lambda: client.files.content(file_id), gone_ok=True
        )
        # A file the endpoint deleted (they keep them for a while): its requests are sent again.
        return "" if content is None else str(content.text)

    # --- the stream -------------------------------------------------------------------

    async def stream(
        self, requests: Sequence[ChatRequest], admit: Admit | None = None
    ) -> AsyncGenerator[tuple[int, ChatResponse], None]:
        """Yield (index, response) for every request, batch by batch as each one ends."""
        if not requests:
            return
        keys = [request_key(self.identity, r) for r in requests]
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        by_key = {key: requests[indices[0]] for key, indices in groups.items()}
        log = BatchLog(self.log_path)

        # Re-attach: a wanted key whose latest recorded batch did not fail it is awaited
        # from that batch; `owner` is the batch each key's answer is taken from.
        owner: dict[str, dict[str, Any]] = {}
        for record in log.records:
            for key in record["keys"]:
                if key in groups:
                    owner[key] = record
        for key, record in list(owner.items()):
            if key in (record.get("failed") or ()):
                del owner[key]
        attached = [r for r in log.records if any(owner.get(k) is r for k in r["keys"])]
        fresh: list[str] = []
        for key, indices in groups.items():
            if key in owner:
                continue  # sent by an earlier process: never admitted (or paid for) twice
            held = None
            for i in indices:
                reason = admit(i) if admit else None
                if reason is not None:
                    held = reason
                    yield i, ChatResponse(None, "error", error=reason, error_kind="not_sent")
            if held is None:
                fresh.append(key)

        async with self._client() as client:
            for record in attached:
                if record.get("batch_id") is None:
                    await self._create(client, record, log, uploaded_now=False)
                else:
                    say(
                        f"batch {record['batch_id']}: re-attached ({len(record['keys'])} "
                        "request(s) sent by an earlier run)"
                    )
            pending = list(attached)
            if fresh:
                pending += self._own(owner, await self._submit(client, log, fresh, by_key, 0))
            while pending:
                record = await self._wait_for_one(client, pending, log)
                pending.remove(record)
                retry: list[str] = []
                async for key, result in self._results(client, record, log):
                    if owner.get(key) is not record:
                        continue  # not wanted now, or awaited from a later batch
                    if result.retryable and record["round"] < self.settings.retry_rounds:
                        retry.append(key)
                        continue
                    for i in groups[key]:
                        yield i, result.response
                if record["status"] == "failed":
                    raise BatchFailed(
                        f"the endpoint failed batch {record['batch_id']} ({len(record['keys'])} "
                        f"request(s)) without running it: "
                        f"{record.get('errors') or 'no reason given'}. Nothing in it was "
                        "answered or billed. Fix what the endpoint names (for a token or "
                        "request limit, lower teacher.model.batch.max_requests_per_file) and "
                        f"run `potstill synth {self._run_root()}` again: it sends those "
                        "requests in a new batch"
                    )
                if retry:
                    more = await self._submit(client, log, retry, by_key, record["round"] + 1)
                    pending += self._own(owner, more)

    @staticmethod
    def _own(
        owner: dict[str, dict[str, Any]], records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        for record in records:
            for key in record["keys"]:
                owner[key] = record
        return records

    async def _wait_for_one(
        self, client: Any, pending: list[dict[str, Any]], log: BatchLog
    ) -> dict[str, Any]:
        """Poll the pending batches until one has ended; show progress as it changes."""
        while True:
            for record in pending:
                batch_id = record["batch_id"]
                started = self._since.setdefault(batch_id, time.monotonic())
                batch = await self._control(
                    f"look at batch {batch_id}",
                    partial(client.batches.retrieve, batch_id),
                    gone_ok=True,
                )
                if batch is None:  # the endpoint no longer knows it: its requests go again
                    record.update(status="gone", output_file_id=None, error_file_id=None)
                    log.save()
                    return record
                counts = batch.request_counts
                state = (
                    batch.status,
                    getattr(counts, "completed", 0) if counts else 0,
                    getattr(counts, "failed", 0) if counts else 0,
                    getattr(counts, "total", 0) if counts else 0,
                )
                now = time.monotonic()
                # A line when the status changes, when the counts did and a minute passed, and
                # every ten minutes regardless: a day-long batch leaves a readable log.
                before = self._shown.get(batch_id)
                quiet = now - self._last_line
                if (
                    before is None
                    or before[0] != state[0]
                    or (before != state and quiet >= 60)
                    or quiet >= 600
                ):
                    self._shown[batch_id] = state
                    self._last_line = now
                    say(
                        f"batch {batch_id}: {state[0]}, {state[1]}/{state[3]} done, "
                        f"{state[2]} failed (waited {duration(now - started)})"
                    )
                if batch.status in ENDED:
                    record.update(
                        status=batch.status,
                        output_file_id=batch.output_file_id,
                        error_file_id=batch.error_file_id,
                    )
                    record["errors"] = _batch_errors(batch)
                    log.save()
                    return record
            await self._sleep(self.settings.poll_interval_s)

    async def _results(
        self, client: Any, record: dict[str, Any], log: BatchLog
    ) -> AsyncGenerator[tuple[str, Result], None]:
        """Every key of an ended batch with its result; records which keys it failed."""
        batch_id, status, attempts = record["batch_id"], record["status"], record["round"] + 1
        if status == "failed":  # nothing ran: every line fails, unbilled, then the stage stops
            reason = f"batch {batch_id} failed without running: {record.get('errors')}"
            for key in record["keys"]:
                yield key, _failure("batch_failed", reason, False, attempts)
            record["failed"] = list(record["keys"])
            log.save()
            return
        output = await self._download(client, record.get("output_file_id"))
        errors = await self._download(client, record.get("error_file_id"))
        results, notes = read_results(output, errors, self._secret, attempts)
        for note in notes:
            say(f"batch {batch_id}: {note}; its request is sent again")
        unanswered = "batch_missing" if status == "completed" else f"batch_{status}"
        failed = []
        answered = 0
        for key in record["keys"]:
            result = results.get(key) or _failure(
                unanswered,
                f"{unanswered}: batch {batch_id} ({status}) gave no result for this request",
                status in ("completed", "expired", "gone"),
                attempts,
            )
            if result.response.ok:
                answered += 1
            else:
                failed.append(key)
            yield key, result
        if status != "completed" or failed:
            rounds = self.settings.retry_rounds
            then = (
                f"sent again in a smaller batch (retry round {record['round'] + 1} of {rounds})"
                if record["round"] < rounds
                else "failed calls of this run (teacher.model.batch.retry_rounds reached); "
                "`potstill synth` sends them again"
            )
            say(
                f"batch {batch_id}: {status} with {answered} of {len(record['keys'])} "
                f"request(s) answered; the answers are kept, the failed lines are {then}"
            )
        record["failed"] = failed
        log.save()

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        results: list[ChatResponse | None] = [None] * len(requests)
        async for i, response in self.stream(requests):
            results[i] = response
        return [r for r in results if r is not None]


def _batch_errors(batch: Any) -> str:
    """A failed batch's reasons, as the endpoint gave them (first five)."""
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) or []
    shown = []
    for error in data[:5]:
        line = f" (line {error.line})" if getattr(error, "line", None) else ""
        shown.append(f"{getattr(error, 'code', None) or 'error'}{line}: {error.message}")
    return "; ".join(shown)
