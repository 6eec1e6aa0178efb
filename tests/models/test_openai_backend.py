"""The `openai` backend over real HTTP: where its key comes from, what its errors show, and
how it behaves against a fault-injecting server on 127.0.0.1."""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from fault_server import completion

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.openai_backend import EndpointRefused, MissingKeyError, OpenAIChatModel

if TYPE_CHECKING:
    from conftest import Tally

SENTINEL = "sk-potstill-sentinel-77c1"
DECOY = "sk-potstill-decoy-from-openai-api-key"
SECRET = "sk-backend-test-7c1e"


def _echo_server() -> Any:
    """Answers with the Authorization header it got (kept in `app.state.seen`) in a 200 reply,
    or, under `/not-json/v1` and `/bad-usage/v1`, in a 200 page that is not JSON or a usage
    field that is not a number; `/fail/<code>/v1` echoes it in an error."""
    from fastapi import FastAPI, Header, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI()
    app.state.seen = []

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any], authorization: str = Header("")) -> dict[str, Any]:
        app.state.seen.append(authorization)
        return completion(body["model"], authorization, prompt_tokens=None)

    @app.post("/bad-usage/v1/chat/completions")
    async def bad_usage(body: dict[str, Any], authorization: str = Header("")) -> Any:
        # int() of this field fails, and its error would quote the field.
        answer = completion(body["model"], "fine")
        answer["usage"]["prompt_tokens"] = authorization
        return answer

    @app.post("/not-json/v1/chat/completions")
    async def page(authorization: str = Header("")) -> Any:
        # The key straddles the 80th character, where the error's quote is cut.
        return PlainTextResponse(f"<html>{'.' * 56} {authorization}</html>")

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
    server = _echo_server()
    url = start_server(server)
    monkeypatch.setenv("OPENAI_API_KEY", DECOY)  # the SDK's own default; never used
    monkeypatch.setenv("POTSTILL_TEST_KEY", SENTINEL)
    # The key is sent; echoed back in a 200 reply, it is redacted like an error's echo.
    assert _ask(OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY")).text == "Bearer ***"
    assert _ask(OpenAIChatModel("m", url)).text == "Bearer not-needed"
    assert server.state.seen == [f"Bearer {SENTINEL}", "Bearer not-needed"]
    monkeypatch.delenv("POTSTILL_TEST_KEY")
    with pytest.raises(MissingKeyError, match="POTSTILL_TEST_KEY"):
        OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY")


@pytest.mark.parametrize("code", [400, 401, 403, 500, 502])
def test_an_endpoint_error_that_echoes_the_key_is_shown_redacted(
    start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch, code: int, tally: "Tally"
) -> None:
    url = start_server(_echo_server()).removesuffix("/v1") + f"/fail/{code}/v1"
    monkeypatch.setenv("POTSTILL_TEST_KEY", SENTINEL)
    model = OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY", max_retries=0)
    if code in (401, 403):  # the key is refused: the stage stops at once
        with pytest.raises(EndpointRefused) as refused:
            _ask(model)
        error = str(refused.value)
    else:
        answer = _ask(model)
        assert answer.text is None and answer.error is not None
        error = answer.error
    tally.count("secrets: endpoint errors checked")
    tally.count("secrets: sentinel hits", SENTINEL in error)
    assert str(code) in error and SENTINEL not in error
    if code != 502:  # the SDK quotes a JSON error body; of a plain-text one, only the status
        assert "rejected credentials Bearer ***" in error


def test_a_200_reply_that_echoes_the_key_is_kept_redacted(
    start_server: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch, tally: "Tally"
) -> None:
    base = start_server(_echo_server()).removesuffix("/v1")
    monkeypatch.setenv("POTSTILL_TEST_KEY", SENTINEL)
    answer = _ask(OpenAIChatModel("m", f"{base}/v1", api_key_env="POTSTILL_TEST_KEY"))
    broken = [
        _ask(
            OpenAIChatModel(
                "m", f"{base}/{path}/v1", api_key_env="POTSTILL_TEST_KEY", max_retries=0
            )
        )
        for path in ("not-json", "bad-usage")
    ]
    texts = [answer.text or "", *(reply.error or "" for reply in broken)]
    tally.count("secrets: endpoint replies checked", len(texts))
    tally.count("secrets: sentinel hits", sum(SENTINEL[:8] in text for text in texts))
    assert answer.text == "Bearer ***"
    assert all(reply.error_kind == "bad_response" for reply in broken)
    # Not one piece of the key, not even the start of it that a cut quote would keep.
    assert all(SENTINEL[:8] not in text for text in texts), texts


def _requests(n: int) -> list[ChatRequest]:
    return [
        ChatRequest([{"role": "user", "content": f"Review {i}: the lamp was great."}], 32)
        for i in range(n)
    ]


def _model(url: str, **kwargs: Any) -> OpenAIChatModel:
    settings: dict[str, Any] = {"max_concurrency": 4, "timeout_s": 0.5, "retry_max_wait_s": 0.05}
    return OpenAIChatModel("fake", base_url=url, **{**settings, **kwargs})


def test_faults_are_retried_and_concurrency_stays_bounded(
    fake_teacher: Callable[..., Any],
) -> None:
    plan = {0: ["500"], 1: ["timeout"], 2: ["429"], 3: ["503", "502"]}
    order: dict[str, int] = {}

    def faults(key: str, attempt: int) -> str | None:
        which = order.setdefault(key, len(order))
        steps = plan.get(which, [])
        return steps[attempt - 1] if attempt <= len(steps) else None

    teacher = fake_teacher(faults=faults, hang_s=1.0)
    answers = asyncio.run(_model(teacher.base_url).generate(_requests(12)))
    assert all(a.ok for a in answers)
    assert sorted(a.attempts for a in answers) == [1] * 8 + [2, 2, 2, 3]
    assert answers[0].text is not None and '"good"' in answers[0].text
    assert teacher.max_in_flight <= 4
    assert sum(teacher.answered.values()) == 12  # each answered once


def test_a_call_gives_up_after_its_attempts_and_4xx_is_not_retried(
    fake_teacher: Callable[..., Any],
) -> None:
    def faults(key: str, attempt: int) -> str | None:
        return "500" if key == teacher.key_of(requests[0], "fake") else "400"

    requests = _requests(2)
    teacher = fake_teacher(faults=faults)
    answers = asyncio.run(_model(teacher.base_url, max_retries=2).generate(requests))
    assert [(a.error_kind, a.attempts) for a in answers] == [("http_500", 3), ("http_400", 1)]
    assert all(a.text is None and a.error for a in answers)


@pytest.mark.parametrize("fault", ["401", "403", "quota"])
def test_auth_and_quota_errors_stop_at_once_and_hide_the_key(
    fake_teacher: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    teacher = fake_teacher(faults=lambda key, attempt: fault)
    monkeypatch.setenv("BACKEND_TEST_KEY", SECRET)
    model = _model(teacher.base_url, api_key_env="BACKEND_TEST_KEY")
    with pytest.raises(EndpointRefused) as refused:
        asyncio.run(model.generate(_requests(40)))
    assert SECRET not in str(refused.value)
    assert "no retry can help" in str(refused.value)
    assert sum(teacher.attempts.values()) <= 4  # the requests in flight, no more, no retries


def test_stream_hands_over_answers_as_they_arrive(fake_teacher: Callable[..., Any]) -> None:
    def faults(key: str, attempt: int) -> str | None:
        return "timeout" if attempt == 1 and key == teacher.key_of(requests[0], "fake") else None

    requests = _requests(6)
    teacher = fake_teacher(faults=faults, hang_s=1.0)

    async def collect() -> list[tuple[int, ChatResponse]]:
        return [item async for item in _model(teacher.base_url).stream(requests)]

    arrived = asyncio.run(collect())
    assert [i for i, _ in arrived][-1] == 0  # the slow one last, the others did not wait
    assert sorted(i for i, _ in arrived) == list(range(6))


def test_the_budget_sees_each_answer_settled_before_the_next_call_is_admitted(
    tmp_path: Any,
) -> None:
    from fault_server import FaultServer

    from potstill.models.callstore import CallStore, answer_all
    from potstill.models.cost import Budget, Price

    server = FaultServer(reply=lambda body: "ok")  # reports 5 completion tokens a reply
    url = server.start()
    try:
        model = OpenAIChatModel("m", base_url=url, max_concurrency=1)
        # Worst case 10 tokens, $0.01; a real answer $0.005: after one answer $0.005 is spent
        # and a second call fits in $0.018, as long as the first's worst case is settled
        # before the second is admitted (else $0.01 + $0.01 would not fit).
        budget = Budget(max_usd=0.018, price=Price(0.0, 1000.0))
        requests = [ChatRequest([{"role": "user", "content": f"q{i}"}], 10) for i in range(4)]
        store = CallStore(tmp_path / "calls.sqlite")
        answers = answer_all(
            model,
            store,
            requests,
            4,
            admit=lambda i: budget.admit(i, requests[i], f"k{i}"),
            on_answer=lambda i, r, fresh: budget.settle(i, r, f"k{i}", fresh),
        )
        store.close()
    finally:
        server.stop()
    assert [a.ok for a in answers] == [True, True, False, False]
    assert len(server.log) == 2 and abs(budget.spent - 0.01) < 1e-9
