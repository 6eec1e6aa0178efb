"""The fault-injecting endpoint does what the fault runs rely on: each fault is what a client
sees, faults are reproducible per request, and only whole answers count as answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from fault_server import FAULTS, FaultServer, request_key

# Well above the "slow" fault's delay, well below the "hang" fault's.
CLIENT_TIMEOUT_S = 1.5


def body(question: str) -> dict[str, object]:
    return {"model": "teacher", "messages": [{"role": "user", "content": question}]}


@pytest.fixture
def scripted() -> Iterator[FaultServer]:
    faults = {body(f"q{i}")["messages"][0]["content"]: f for i, f in enumerate(FAULTS)}  # type: ignore[index]
    by_key = {request_key(body(q)): f for q, f in faults.items()}
    server = FaultServer(
        reply=lambda b: f"answer to {b['messages'][-1]['content']}",
        script=lambda key, attempt: by_key.get(key) if attempt == 1 else None,
        # slow_s < the client's timeout < hang_s, with room on a loaded machine: a "slow"
        # reply that missed a tight timeout was once a timeout here.
        hang_s=CLIENT_TIMEOUT_S * 2,
        slow_s=0.2,
    )
    server.start()
    yield server
    server.stop()


def ask(client: httpx.Client, server: FaultServer, question: str) -> httpx.Response:
    return client.post(f"{server.url}/chat/completions", json=body(question))


def test_each_fault_is_what_a_client_sees(scripted: FaultServer) -> None:
    seen: dict[str, object] = {}
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
        for i, fault in enumerate(FAULTS):
            try:
                reply = ask(client, scripted, f"q{i}")
            except httpx.TimeoutException:
                seen[fault] = "timeout"
                continue
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError) as exc:
                seen[fault] = type(exc).__name__
                continue
            if reply.headers["content-type"] != "application/json":
                seen[fault] = "not json"
                continue
            data = reply.json()
            choices = data.get("choices", [])
            seen[fault] = (
                reply.status_code,
                reply.headers.get("retry-after"),
                choices[0]["finish_reason"] if choices else "no choices",
            )
        # A second try of the same question is answered: the script faults attempt 1 only.
        again = ask(client, scripted, "q0").json()
    assert seen["429"] == (429, "0.05", "no choices")
    assert seen["429_bare"] == (429, None, "no choices")
    assert [seen[s] for s in ("500", "502", "503")] == [
        (s, None, "no choices") for s in (500, 502, 503)
    ]
    assert seen["hang"] == "timeout"
    assert seen["reset"] in {"RemoteProtocolError", "ReadError"}
    assert seen["truncated"] in {"RemoteProtocolError", "ReadError"}
    assert seen["not_json"] == "not json"
    assert seen["empty_choices"] == (200, None, "no choices")
    assert seen["length"] == (200, None, "length")
    assert seen["slow"] == (200, None, "stop")
    assert again["choices"][0]["message"]["content"] == "answer to q0"
    assert scripted.injected() == {f: 1 for f in FAULTS}
    # Whole answers only: "length" and "slow" still answer, and the retried q0 did.
    answered = {k for k, n in scripted.answered.items() if n}
    assert answered == {
        request_key(body(q))
        for q in ("q0", f"q{FAULTS.index('length')}", f"q{FAULTS.index('slow')}")
    }


def test_random_faults_are_seeded_per_request_and_near_the_rate() -> None:
    first = FaultServer(reply=lambda b: "x", rate=0.3, seed=7)
    second = FaultServer(reply=lambda b: "x", rate=0.3, seed=7)
    keys = [request_key(body(f"q{i}")) for i in range(2000)]
    picks = [first.choose(k, 1) for k in keys]
    assert picks == [second.choose(k, 1) for k in reversed(keys)][::-1]  # order does not matter
    rate = sum(p is not None for p in picks) / len(picks)
    assert 0.27 < rate < 0.33
    assert {p for p in picks if p} == set(FAULTS)


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    server = FaultServer(reply=lambda b: json.dumps(b["messages"][-1]["content"]))
    server.start()
    try:
        with httpx.Client(timeout=5) as client:
            texts = [
                ask(client, server, f"q{i}").json()["choices"][0]["message"]["content"]
                for i in range(20)
            ]
    finally:
        server.stop()
    assert texts == [json.dumps(f"q{i}") for i in range(20)]
    assert sum(server.answered.values()) == 20 and server.connections == 1


def test_the_openai_backend_gets_an_answer_past_every_fault() -> None:
    """Each fault once, then an answer: every one is retried (a malformed 200 too) except a
    reply cut at the length limit, which is an answer, kept with its finish reason."""
    from potstill.models.base import ChatRequest
    from potstill.models.openai_backend import OpenAIChatModel

    questions = {f"q{i}": fault for i, fault in enumerate(FAULTS)}
    by_key = {request_key({"model": "m", "messages": [_user(q)]}): f for q, f in questions.items()}
    server = FaultServer(
        reply=lambda b: '{"reason": "r", "answer": "positive"}',
        script=lambda key, attempt: by_key.get(key) if attempt == 1 else None,
        hang_s=CLIENT_TIMEOUT_S * 2,
    )
    url = server.start()
    model = OpenAIChatModel("m", base_url=url, timeout_s=CLIENT_TIMEOUT_S, retry_max_wait_s=0.05)
    try:
        answers = asyncio.run(model.generate([ChatRequest([_user(q)], 32) for q in questions]))
    finally:
        server.stop()
    got = {fault: (a.ok, a.attempts, a.finish_reason) for fault, a in zip(FAULTS, answers)}
    answered_at_once = {"length": (True, 1, "length"), "slow": (True, 1, "stop")}
    assert got == {f: answered_at_once.get(f, (True, 2, "stop")) for f in FAULTS}
    assert server.injected() == {f: 1 for f in FAULTS}


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}
