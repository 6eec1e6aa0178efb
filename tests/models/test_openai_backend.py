"""The openai backend against a real, fault-injecting server on 127.0.0.1."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.openai_backend import EndpointRefused, OpenAIChatModel

SECRET = "sk-backend-test-7c1e"


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
