"""`potstill serve` under load and abuse: continuous batching, streaming, limits, errors.

Each freeze the old one-at-a-time server had is a test here, on 127.0.0.1, in which another
client keeps being answered."""

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from potstill.models.base import ChatRequest
from potstill.models.continuous import ContinuousBatcher, Job
from potstill.models.local import LocalChatModel
from potstill.models.logprobs import decode
from potstill.models.openai_backend import OpenAIChatModel
from potstill.models.tokens import chat_token_ids
from potstill.serve import ServeError, Server, StudentTask, create_app

QUESTION = [{"role": "user", "content": "Count to three"}]


@pytest.fixture(scope="module")
def local_model(tiny_model_dir: Path) -> LocalChatModel:
    return LocalChatModel(str(tiny_model_dir))


def serve(
    start_server: Callable[[Any], str], model: LocalChatModel, **kwargs: Any
) -> tuple[str, Server]:
    app = create_app(model, "tiny", **kwargs)
    return start_server(app), app.state.server


@pytest.fixture(scope="module")
def served(local_model: LocalChatModel, start_server: Callable[[Any], str]) -> str:
    return serve(start_server, local_model)[0]


@pytest.fixture(scope="module")
def endless(local_model: LocalChatModel, start_server: Callable[[Any], str]) -> tuple[str, Server]:
    """A server whose model never stops on its own (no stop token), answering up to 64
    tokens: long generations, on purpose."""
    url, server = serve(start_server, local_model, max_tokens=64)
    server.batcher.stop_ids = []
    return url, server


def ask(url: str, timeout: float = 60, **body: Any) -> httpx.Response:
    body.setdefault("messages", QUESTION)
    return httpx.post(f"{url}/chat/completions", json=body, timeout=timeout)


def record_jobs(monkeypatch: pytest.MonkeyPatch) -> list[Job]:
    jobs: list[Job] = []
    submit = ContinuousBatcher.submit

    def recording(self: ContinuousBatcher, job: Job) -> Job:
        jobs.append(job)
        return submit(self, job)

    monkeypatch.setattr(ContinuousBatcher, "submit", recording)
    return jobs


def wait_idle(server: Server) -> None:
    deadline = time.monotonic() + 60
    while server.batcher.load() != (0, 0):
        assert time.monotonic() < deadline, "the scheduler kept generating"
        time.sleep(0.05)


def test_streamed_answer_equals_the_plain_one(served: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=served, api_key="none")
    plain = client.chat.completions.create(
        model="tiny", messages=QUESTION, max_tokens=8, logprobs=True, top_logprobs=2
    )
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=QUESTION,
            max_tokens=8,
            logprobs=True,
            top_logprobs=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    streamed = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert text == plain.choices[0].message.content
    assert finish == [plain.choices[0].finish_reason]
    assert plain.choices[0].logprobs is not None
    assert [t.model_dump() for t in streamed] == [
        t.model_dump() for t in plain.choices[0].logprobs.content or []
    ]
    assert chunks[-1].usage is not None and plain.usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_logprobs_come_in_the_chat_completions_shape(served: str) -> None:
    reply = ask(served, max_tokens=3, logprobs=True, top_logprobs=4).json()
    content = reply["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= 3
    for token in content:
        assert set(token) == {"token", "logprob", "bytes", "top_logprobs"}
        assert len(token["top_logprobs"]) == 4
        # Greedy: the chosen token is the most likely one.
        assert token["logprob"] == token["top_logprobs"][0]["logprob"]
        assert token["bytes"] == list(token["token"].encode())
    assert ask(served, max_tokens=2).json()["choices"][0]["logprobs"] is None


def test_the_openai_backend_reads_the_servers_top_logprobs(served: str) -> None:
    # synth.logprobs with `potstill serve` as the teacher's endpoint: the backend's reading
    # of the reply (models/logprobs.from_openai_choice) gets every token and its top-K.
    model = OpenAIChatModel("tiny", base_url=served, max_retries=0, timeout_s=60)
    asked, plain = asyncio.run(
        model.generate([ChatRequest(QUESTION, 6, logprobs=3), ChatRequest(QUESTION, 6)])
    )
    assert asked.ok and asked.logprobs is not None, asked.error
    found = decode(asked.logprobs)
    assert len(found.tokens) == asked.completion_tokens >= 1
    assert found.top_logprobs.shape == (len(found.tokens), 3)
    assert np.all(np.diff(found.top_logprobs, axis=1) <= 0) and np.all(found.top_logprobs <= 0)
    # Greedy: each chosen token is the most likely one, and asking changes no text.
    assert [top[0] for top in found.top_tokens] == found.tokens
    assert plain.logprobs is None and plain.text == asked.text


def test_concurrent_answers_equal_sequential_ones(served: str) -> None:
    bodies = [
        {"messages": [{"role": "user", "content": f"Say {i} " * (i + 1)}], "max_tokens": 4 + i}
        for i in range(6)
    ]
    sequential = [ask(served, **b).json()["choices"][0]["message"]["content"] for b in bodies]
    together: list[str | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def one(i: int) -> None:
        start.wait()
        together[i] = ask(served, **bodies[i]).json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert together == sequential


def test_a_seed_makes_sampling_repeatable_and_top_p_narrows_it(served: str) -> None:
    def text(**body: Any) -> str:
        return ask(served, max_tokens=8, **body).json()["choices"][0]["message"]["content"]

    sampled = [text(temperature=1.5, seed=11) for _ in range(2)]
    assert sampled[0] == sampled[1]
    # A nucleus this small holds only the most likely token: the greedy answer.
    assert text(temperature=1.5, top_p=1e-9, seed=5) == text()


def test_the_server_and_the_local_backend_agree_greedily(
    served: str, local_model: LocalChatModel
) -> None:
    requests = [
        ChatRequest([{"role": "user", "content": f"Count to {i}"}], max_tokens=6) for i in range(3)
    ]
    local = local_model.generate_sync(requests)
    remote = [ask(served, messages=r.messages, max_tokens=6).json() for r in requests]
    assert [r["choices"][0]["message"]["content"] for r in remote] == [r.text for r in local]


def test_a_huge_max_tokens_is_capped_while_others_are_answered(
    endless: tuple[str, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = endless
    jobs = record_jobs(monkeypatch)
    result: dict[str, Any] = {}
    big = threading.Thread(
        target=lambda: result.update(
            reply=ask(url, max_tokens=1_000_000_000, temperature=2.0, seed=3).json()
        )
    )
    big.start()
    while not jobs:
        time.sleep(0.01)
    small = ask(url, max_tokens=2, timeout=30).json()
    big.join(120)
    assert small["usage"]["completion_tokens"] == 2
    assert result["reply"]["choices"][0]["finish_reason"] == "length"
    assert result["reply"]["usage"]["completion_tokens"] == 64


def test_max_tokens_never_runs_past_the_context(local_model: LocalChatModel) -> None:
    from potstill.serve import CompletionRequest

    server = Server(local_model, "tiny", max_tokens=10**9)
    context = server.batcher.context_length
    job, _ = server.job(CompletionRequest(messages=QUESTION, max_tokens=10**9))
    assert len(job.prompt) + job.max_tokens == context


def test_an_over_long_prompt_is_a_400_and_others_are_answered(served: str) -> None:
    reply = ask(served, messages=[{"role": "user", "content": "word " * 20_000}], max_tokens=2)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and "context" in error["message"]
    huge = ask(served, messages=[{"role": "user", "content": "x" * 10_000_000}], max_tokens=2)
    assert huge.status_code == 400 and "characters" in huge.json()["error"]["message"]
    assert ask(served, max_tokens=2).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_cancels_its_generation(
    local_model: LocalChatModel,
    start_server: Callable[[Any], str],
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    url, server = serve(start_server, local_model, max_tokens=100_000)
    server.batcher.stop_ids = []  # it would generate up to the model's context
    jobs = record_jobs(monkeypatch)
    body = {"messages": QUESTION, "max_tokens": 100_000, "stream": stream}
    if stream:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as response:
            next(response.iter_lines())  # the first event, then the client leaves
    else:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/chat/completions", json=body, timeout=1.0)
    (job,) = jobs
    assert ask(url, max_tokens=2).json()["usage"]["completion_tokens"] == 2
    wait_idle(server)
    assert job.cancelled
    assert len(job.tokens) < job.max_tokens


@pytest.mark.parametrize(
    "body",
    [
        '{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        '{"messages": [{"role": "user", "content": "x"}], "temperature": Infinity}',
        '{"messages": [{"role": "user", "content": "x"}], "temperature": 5}',
        '{"messages": [{"role": "user", "content": "x"}], "seed": 1e23}',
        '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
        '{"messages": [{"role": "user", "content": "x"}], "n": 2}',
        '{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}',
        '{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}',
        '{"messages": [{"role": "wizard", "content": "x"}]}',
        '{"messages": [{"role": "tool", "content": "x"}]}',
        '{"messages": []}',
        '{"messages": [{"role": "user", "content": "x"}], "inputs": {"text": "x"}}',
        '{"messages": [{"role": "user", "content": "x"}], "stop": ["\\n"]}',
        '{"messages": [{"role": "user", "content": "x"}], "top_p": 0}',
        "not json",
    ],
)
def test_bad_values_are_400s_in_openais_shape(served: str, body: str) -> None:
    reply = httpx.post(
        f"{served}/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert reply.json()["error"]["message"]
    assert ask(served, max_tokens=1).status_code == 200


def test_a_full_queue_is_a_429(
    local_model: LocalChatModel, start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, server = serve(start_server, local_model, max_tokens=100_000, max_batch=1, max_waiting=0)
    server.batcher.stop_ids = []
    jobs = record_jobs(monkeypatch)
    body = {"messages": QUESTION, "max_tokens": 100_000, "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)
        busy = ask(url, max_tokens=2)
    assert busy.status_code == 429
    assert busy.json()["error"]["type"] == "rate_limit_error"
    wait_idle(server)
    assert jobs[0].cancelled
    assert ask(url, max_tokens=2).status_code == 200


def test_the_api_key_guards_all_but_health(
    local_model: LocalChatModel, start_server: Callable[[Any], str]
) -> None:
    from openai import AuthenticationError, OpenAI

    url, _ = serve(start_server, local_model, api_key="sk-local")
    root = url.removesuffix("/v1")
    assert httpx.get(f"{root}/health").json()["status"] == "ok"
    refused = httpx.get(f"{url}/models")
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=url, api_key="wrong").chat.completions.create(
            model="tiny", messages=QUESTION
        )
    reply = OpenAI(base_url=url, api_key="sk-local").chat.completions.create(
        model="tiny", messages=QUESTION, max_tokens=2
    )
    assert reply.usage is not None and reply.usage.completion_tokens >= 1


def _review_task() -> StudentTask:
    from potstill.config import PromptConfig, TaskConfig
    from potstill.tasks import build_task

    task = build_task(TaskConfig(kind="classification", labels=["positive", "negative"]))
    return StudentTask(task, PromptConfig(style="zero_shot", max_tokens=4))


def test_a_task_aware_server_asks_the_training_prompt_and_parses_the_reply(
    local_model: LocalChatModel, start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    student = _review_task()
    url, _ = serve(start_server, local_model, student=student)
    jobs = record_jobs(monkeypatch)
    (field,) = student.task.input_fields
    review = "Loved every minute of it."
    by_message = ask(url, messages=[{"role": "user", "content": review}]).json()
    by_inputs = ask(url, messages=[], inputs={field: review}).json()
    trained = chat_token_ids(
        local_model.tokenizer, student.task.messages({field: review}, student.prompt)
    )
    assert [j.prompt for j in jobs] == [trained, trained]
    assert [j.max_tokens for j in jobs] == [4, 4]  # the students' prompt's max_tokens
    message = by_message["choices"][0]["message"]
    parsed = student.task.parse(message["content"], "zero_shot", {field: review})
    assert (message["answer_status"], message["answer"]) == (parsed.status, parsed.answer)
    assert by_inputs["choices"][0]["message"] == message
    missing = ask(url, messages=[], inputs={"other": review})
    assert missing.status_code == 400 and field in missing.json()["error"]["message"]


def test_the_parsed_answer_is_the_tasks_canonical_one() -> None:
    student = _review_task()
    (field,) = student.task.input_fields
    assert student.answer("Negative.", {field: "x"}) == {
        "answer_status": "ok",
        "answer": "negative",
    }
    assert student.answer("no idea", {field: "x"})["answer"] is None


def test_health_says_how_busy_the_server_is(served: str) -> None:
    body = httpx.get(served.removesuffix("/v1") + "/health").json()
    assert body == {"status": "ok", "running": 0, "waiting": 0}


def test_a_request_the_server_refuses_names_the_field(local_model: LocalChatModel) -> None:
    from potstill.serve import CompletionRequest

    server = Server(local_model, "tiny")
    with pytest.raises(ServeError, match="logprobs"):
        server.job(CompletionRequest(messages=QUESTION, top_logprobs=3))


def test_stream_events_are_server_sent_events(served: str) -> None:
    body = {"messages": QUESTION, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{served}/chat/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_generation_failure_fails_the_waiting_clients(local_model: LocalChatModel) -> None:
    """A model error ends every job with an error event; nobody waits forever."""
    batcher = ContinuousBatcher(local_model)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory")

    batcher._forward = broken  # type: ignore[method-assign]
    batcher.start()

    async def run() -> Any:
        job = batcher.submit(Job(prompt=[1, 2, 3], max_tokens=4))
        return await asyncio.wait_for(job.events.get(), 30)

    event = asyncio.run(run())
    assert event.finish == "error" and "out of memory" in (event.error or "")
    batcher.stop()
