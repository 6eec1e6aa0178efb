"""Cost per 1,000 requests: endpoints by tokens and price, local models by compute time."""

from potstill.config import ModelConfig
from potstill.evaluate.cost import cost_and_latency

ROWS = [
    {"error": None, "latency_s": 0.2, "prompt_tokens": 100, "completion_tokens": 20},
    {"error": None, "latency_s": 0.6, "prompt_tokens": 300, "completion_tokens": 60},
    {"error": "timeout", "latency_s": 30.0, "prompt_tokens": 0, "completion_tokens": 0},
]


def test_local_models_are_priced_by_measured_compute_time() -> None:
    found = cost_and_latency(ROWS, ModelConfig(), local_price_per_hour=3.6)
    # 0.4 s per request (failed calls left out): 400 s per 1,000, at $3.60/hour = $0.40.
    assert found["seconds_per_1k_requests"] == 400.0
    assert abs(found["cost_per_1k_requests"] - 0.4) < 1e-12
    assert found["tokens_per_s"] == 100.0 and found["requests_measured"] == 2
    assert found["cost_basis"] == "local compute at $3.6/hour"


def test_endpoints_are_priced_by_tokens_or_not_at_all() -> None:
    priced = ModelConfig(
        backend="openai", model="m", price_per_million_input=1.0, price_per_million_output=4.0
    )
    found = cost_and_latency(ROWS, priced, local_price_per_hour=3.6)
    # per request: 200 tokens in at $1/M and 40 out at $4/M = $0.00036; $0.36 per 1,000.
    assert abs(found["cost_per_1k_requests"] - 0.36) < 1e-12
    unpriced = cost_and_latency(ROWS, ModelConfig(backend="openai", model="m"), 3.6)
    assert unpriced["cost_per_1k_requests"] is None
    assert "no price" in unpriced["cost_basis"]
