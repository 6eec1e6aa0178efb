"""Load on `potstill serve`: 1, 8 and 32 concurrent clients against the packaged model.

`potstill serve packaged:smollm2-135m-instruct` runs in its own process on 127.0.0.1
(started and stopped by potstill's engine launcher, `models/engines.EngineServer`). Each
level sends `--per-client` requests per client (at least `--min-requests` in all): the
demo's arithmetic word problems (`data/stories.make_problems`), greedy, `--max-tokens` new
tokens. Clients are closed-loop: each sends its next request when the last one is
answered. It prints requests/s, completion tokens/s, p50/p95 latency and errors per level,
and the speed-up over one client, and writes benchmarks/results/serve_load.json. Run it
alone on the machine:

    flock /tmp/potstill-cpu.lock .venv/bin/python benchmarks/serve_load.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from potstill.data.stories import make_problems
from potstill.models.engines import EngineServer

MODEL = "packaged:smollm2-135m-instruct"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


async def level(url: str, clients: int, total: int, max_tokens: int) -> dict[str, Any]:
    import httpx

    questions = [p["question"] for p in make_problems(total, seed=7)]
    pending = list(range(total))
    latencies: list[float] = []
    tokens = 0
    errors: list[str] = []

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while pending:
            i = pending.pop()
            body = {
                "messages": [{"role": "user", "content": questions[i]}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            start = time.perf_counter()
            try:
                reply = await http.post(f"{url}/chat/completions", json=body)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - start)
            if reply.status_code != 200:
                errors.append(f"HTTP {reply.status_code}")
                continue
            tokens += int(reply.json()["usage"]["completion_tokens"])

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - start
    done = len(latencies) - sum(e.startswith("HTTP") for e in errors)
    return {
        "clients": clients,
        "requests": total,
        "wall_s": round(wall, 2),
        "requests_per_s": round(done / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(percentile(latencies, 0.95), 3),
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients per level")
    parser.add_argument("--per-client", type=int, default=2, help="requests per client")
    parser.add_argument("--min-requests", type=int, default=16, help="requests per level, at least")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load.json"))
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    command = [
        sys.executable,
        "-m",
        "potstill",
        "serve",
        MODEL,
        "--port",
        "{port}",
        "--max-batch",
        str(args.max_batch),
        "--max-waiting",
        str(max(levels)),
    ]
    log = Path(tempfile.mkdtemp(prefix="serve-load-")) / "serve.log"
    rows = []
    with EngineServer(command, log, ready_s=600) as server:
        # One untimed request: the first call pays for lazy initialisation.
        asyncio.run(level(server.base_url, 1, 1, 4))
        for clients in levels:
            total = max(args.min_requests, clients * args.per_client)
            rows.append(asyncio.run(level(server.base_url, clients, total, args.max_tokens)))
            print(f"  {clients} clients done", flush=True)
    base = rows[0]["requests_per_s"] or float("nan")
    print(f"\npotstill serve {MODEL}, greedy, {args.max_tokens} new tokens, 127.0.0.1\n")
    header = "clients  requests  wall s  req/s   tok/s  p50 s  p95 s  errors  speed-up"
    print(header)
    for row in rows:
        row["speedup_vs_1"] = round(row["requests_per_s"] / base, 2)
        print(
            f"{row['clients']:>7}  {row['requests']:>8}  {row['wall_s']:>6}  "
            f"{row['requests_per_s']:>5}  {row['tokens_per_s']:>6}  {row['p50_s']:>5}  "
            f"{row['p95_s']:>5}  {row['errors']:>6}  {row['speedup_vs_1']:>7}x"
        )
    result = {
        "benchmark": "serve_load",
        "model": MODEL,
        "max_tokens": args.max_tokens,
        "max_batch": args.max_batch,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "levels": rows,
        "command": " ".join(["benchmarks/serve_load.py", *sys.argv[1:]]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
