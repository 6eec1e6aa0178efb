"""The `openai` backend over real HTTP: where its key comes from, what its errors show, and
how it behaves against a fault-injecting server on 127.0.0.1."""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from fault_server import FaultServer

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.openai_backend import EndpointRefused, MissingKeyError, OpenAIChatModel

if TYPE_CHECKING:
    from conftest import Tally

SENTINEL = "sk-potstill-sentinel-77c1"
DECOY = "sk-potstill-decoy-from-openai-api-key"
SECRET = "sk-backend-test-7c1e"


def _echoing(fault_server: Callable[..., FaultServer], fault: str | None = None) -> FaultServer:
    """A server that answers with the bearer key it got (as "Bearer <key>"), or injects
    `fault` with the key quoted back in the error, page or usage field."""

    def echo(body: dict[str, Any]) -> str:
        return f"Bearer {server.asking_key}"

    server = fault_server(reply=echo, script=lambda key, attempt: fault, echo_key=True)
    return server


def _ask(model: OpenAIChatModel) -> Any:
    (answer,) = asyncio.run(model.generate([ChatRequest([{"role": "user", "content": "hi"}])]))
    return answer


def test_the_key_comes_only_from_the_variable_the_config_names(
    fault_server: Callable[..., FaultServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _echoing(fault_server)
    url = server.url
    monkeypatch.setenv("OPENAI_API_KEY", DECOY)  # the SDK's own default; never used
    monkeypatch.setenv("POTSTILL_TEST_KEY", SENTINEL)
    # The key is sent; echoed back in a 200 reply, it is redacted like an error's echo.
    assert _ask(OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY")).text == "Bearer ***"
    assert _ask(OpenAIChatModel("m", url)).text == "Bearer not-needed"
    assert server.api_keys == [SENTINEL, "not-needed"]
    monkeypatch.delenv("POTSTILL_TEST_KEY")
    with pytest.raises(MissingKeyError, match="POTSTILL_TEST_KEY"):
        OpenAIChatModel("m", url, api_key_env="POTSTILL_TEST_KEY")


@pytest.mark.parametrize("fault", ["400", "401", "403", "500", "502", "proxy_page"])
def test_an_endpoint_error_that_echoes_the_key_is_shown_redacted(
    fault_server: Callable[..., FaultServer],
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    tally: "Tally",
) -> None:
    url = _echoing(fault_server, fault).url
    code = 502 if fault == "proxy_page" else int(fault)
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
    if fault != "proxy_page":  # the SDK quotes a JSON error body; of a page, only the status
        assert f"upstream error {code} (key ***)" in error


def test_a_200_reply_that_echoes_the_key_is_kept_redacted(
    fault_server: Callable[..., FaultServer], monkeypatch: pytest.MonkeyPatch, tally: "Tally"
) -> None:
    monkeypatch.setenv("POTSTILL_TEST_KEY", SENTINEL)
    answer = _ask(OpenAIChatModel("m", _echoing(fault_server).url, api_key_env="POTSTILL_TEST_KEY"))
    # A 200 page that is not JSON, and a usage field that is not a number, quoting the key.
    broken = [
        _ask(
            OpenAIChatModel(
                "m",
                _echoing(fault_server, fault).url,
                api_key_env="POTSTILL_TEST_KEY",
                max_retries=0,
            )
        )
        for fault in ("not_json", "bad_usage")
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
    plan = {0: ["500"], 1: ["hang"], 2: ["429"], 3: ["503", "502"]}
    order: dict[str, int] = {}

    def faults(key: str, attempt: int) -> str | None:
        which = order.setdefault(key, len(order))
        steps = plan.get(which, [])
        return steps[attempt - 1] if attempt <= len(steps) else None

    teacher = fake_teacher(script=faults, hang_s=1.0)
    answers = asyncio.run(_model(teacher.url).generate(_requests(12)))
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
    teacher = fake_teacher(script=faults)
    answers = asyncio.run(_model(teacher.url, max_retries=2).generate(requests))
    assert [(a.error_kind, a.attempts) for a in answers] == [("http_500", 3), ("http_400", 1)]
    assert all(a.text is None and a.error for a in answers)


@pytest.mark.parametrize("fault", ["401", "403", "quota"])
def test_auth_and_quota_errors_stop_at_once_and_hide_the_key(
    fake_teacher: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    teacher = fake_teacher(script=lambda key, attempt: fault)
    monkeypatch.setenv("BACKEND_TEST_KEY", SECRET)
    model = _model(teacher.url, api_key_env="BACKEND_TEST_KEY")
    with pytest.raises(EndpointRefused) as refused:
        asyncio.run(model.generate(_requests(40)))
    assert SECRET not in str(refused.value)
    assert "no retry can help" in str(refused.value)
    assert sum(teacher.attempts.values()) <= 4  # the requests in flight, no more, no retries


def test_stream_hands_over_answers_as_they_arrive(fake_teacher: Callable[..., Any]) -> None:
    def faults(key: str, attempt: int) -> str | None:
        return "hang" if attempt == 1 and key == teacher.key_of(requests[0], "fake") else None

    requests = _requests(6)
    teacher = fake_teacher(script=faults, hang_s=1.0)

    async def collect() -> list[tuple[int, ChatResponse]]:
        return [item async for item in _model(teacher.url).stream(requests)]

    arrived = asyncio.run(collect())
    assert [i for i, _ in arrived][-1] == 0  # the slow one last, the others did not wait
    assert sorted(i for i, _ in arrived) == list(range(6))


def test_the_budget_sees_each_answer_settled_before_the_next_call_is_admitted(
    tmp_path: Any,
) -> None:
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
