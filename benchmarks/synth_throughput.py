"""Throughput of the synth stage against an endpoint that answers after a fixed 200 ms.

A local OpenAI-compatible server on 127.0.0.1 (its own process) answers every chat request
after exactly `--latency` seconds. Through it go:

- the synth stage itself (`run_synth`: requests, call store committing answers as they
  arrive, retries, progress bar, parsing, filters, output files) for `--requests` training
  inputs at `--concurrency` requests in flight;
- a bare asyncio + openai loop at the same concurrency, no store (the ceiling for a client);
- a sequential loop (one request at a time) over `--sequential` requests.

It prints requests/s of each against the ideal (concurrency / latency) and writes the
figures to benchmarks/results/synth_throughput.json. Run it alone on the machine:

    flock /tmp/potstill-cpu.lock .venv/bin/python benchmarks/synth_throughput.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

REPLY = json.dumps({"reason": "The review praises it.", "answer": "good"})


def serve(port: int, latency: float) -> None:
    """A bare ASGI app under uvicorn: read the request, wait, answer."""
    import uvicorn

    body = json.dumps(
        {
            "id": "bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": REPLY},
                }
            ],
            "usage": {"prompt_tokens": 60, "completion_tokens": 12, "total_tokens": 72},
        }
    ).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await asyncio.sleep(latency)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the benchmark server did not start")


def messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Classify the review. Reply with JSON only."},
        {"role": "user", "content": f"Review {i}: the kettle was great."},
    ]


def sequential(url: str, n: int) -> float:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="not-needed", max_retries=0)
    start = time.perf_counter()
    for i in range(n):
        client.chat.completions.create(model="bench", messages=messages(i), max_tokens=32)  # type: ignore[arg-type]
    return n / (time.perf_counter() - start)


def bare_loop(url: str, n: int, concurrency: int) -> float:
    from openai import AsyncOpenAI

    async def run() -> float:
        sem = asyncio.Semaphore(concurrency)
        async with AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0) as client:

            async def one(i: int) -> None:
                async with sem:
                    await client.chat.completions.create(
                        model="bench",
                        messages=messages(i),  # type: ignore[arg-type]
                        max_tokens=32,
                    )

            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - start)

    return asyncio.run(run())


def synth_stage(url: str, n: int, concurrency: int, folder: Path) -> dict[str, Any]:
    from potstill.config import parse_config
    from potstill.pipeline import open_run, prepare_split
    from potstill.synth.stage import run_synth
    from potstill.tasks import build_task

    data = folder / "reviews.jsonl"
    with data.open("w") as handle:
        for i in range(n + 4):
            handle.write(
                json.dumps({"text": f"Review {i}: the kettle was great.", "label": "good"})
            )
            handle.write("\n")
    config = parse_config(
        {
            "name": "bench",
            "task": {"kind": "classification", "labels": ["good", "bad"]},
            "dataset": {"path": str(data), "fields": {"text": "text"}, "test_size": 4},
            "teacher": {
                "model": {
                    "backend": "openai",
                    "model": "bench",
                    "base_url": url,
                    "max_concurrency": concurrency,
                    "price_per_million_input": 3.0,
                    "price_per_million_output": 3.0,
                },
                "prompt": {"style": "cot", "max_tokens": 32},
            },
        },
        "synth_throughput",
    )
    run = open_run(config, folder / "runs")
    split = prepare_split(run, config)
    task = build_task(config.task)
    start = time.perf_counter()
    summary = run_synth(run, config, task, split.train, split.test)
    seconds = time.perf_counter() - start
    assert summary["accepted"] == n and summary["failed_calls"] == 0, summary
    return {"seconds": seconds, "rate": n / seconds, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/synth_throughput.json")
    )
    args = parser.parse_args()

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, args.latency), daemon=True
    )
    server.start()
    try:
        wait_for(port)
        url = f"http://127.0.0.1:{port}/v1"
        ideal = args.concurrency / args.latency
        seq = sequential(url, args.sequential)
        bare = bare_loop(url, args.requests, args.concurrency)
        with tempfile.TemporaryDirectory() as tmp:
            stage = synth_stage(url, args.requests, args.concurrency, Path(tmp))
    finally:
        server.terminate()
        server.join()

    rows = [
        ("sequential loop", seq),
        (f"bare asyncio + openai, {args.concurrency} in flight", bare),
        (f"synth stage, {args.concurrency} in flight", stage["rate"]),
    ]
    print(
        f"\n{args.requests} requests, server latency {args.latency * 1000:.0f} ms, "
        f"ideal {ideal:.0f} req/s\n"
    )
    print(f"{'client':40} {'req/s':>8} {'of ideal':>9} {'x sequential':>13}")
    for name, rate in rows:
        print(f"{name:40} {rate:8.1f} {rate / ideal:9.1%} {rate / seq:13.1f}")
    result = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "ideal_rps": ideal,
        "sequential_rps": round(seq, 2),
        "bare_loop_rps": round(bare, 2),
        "synth_stage_rps": round(stage["rate"], 2),
        "synth_stage_seconds": round(stage["seconds"], 2),
        "synth_of_ideal": round(stage["rate"] / ideal, 4),
        "synth_vs_sequential": round(stage["rate"] / seq, 2),
        "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
