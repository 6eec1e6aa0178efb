"""What a candidate costs: latency per request, throughput, and dollars per 1,000 requests.

Endpoints are priced by tokens at the prices in their config. Local models are priced by
measured compute time at `evaluate.local_price_per_hour`: a local backend answers in batches,
and each request is charged its share of its batch's time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from potstill.config import ModelConfig
from potstill.models.cost import call_cost, price_of


def cost_and_latency(
    rows: list[dict[str, Any]], model: ModelConfig, local_price_per_hour: float
) -> dict[str, Any]:
    """Per-candidate cost figures from its prediction rows (failed calls left out)."""
    done = [r for r in rows if r.get("error") is None]
    latency = [float(r["latency_s"]) for r in done]
    out_tokens = sum(int(r["completion_tokens"]) for r in done)
    in_tokens = sum(int(r["prompt_tokens"]) for r in done)
    seconds = float(sum(latency))
    found: dict[str, Any] = {
        "requests_measured": len(done),
        "tokens_per_s": out_tokens / seconds if seconds > 0 else None,
        "seconds_per_1k_requests": 1000 * float(np.mean(latency)) if latency else None,
        "cost_per_1k_requests": None,
    }
    if not done:
        found["cost_basis"] = "no successful request to measure"
        return found
    if model.backend == "local":
        found["cost_per_1k_requests"] = (
            found["seconds_per_1k_requests"] / 3600 * local_price_per_hour
        )
        found["cost_basis"] = f"local compute at ${local_price_per_hour:g}/hour"
        return found
    price = price_of(model)
    if price is None:
        found["cost_basis"] = "no price in the config (price_per_million_input/output)"
        return found
    found["cost_per_1k_requests"] = 1000 * call_cost(price, in_tokens, out_tokens) / len(done)
    found["cost_basis"] = (
        f"endpoint prices ${price.input_per_1m:g} / ${price.output_per_1m:g} per million "
        "tokens in / out"
    )
    return found
