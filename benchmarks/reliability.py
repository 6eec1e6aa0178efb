"""The reliability suite's figures for docs/reliability.md.

Runs the reliability tests with pytest, once as CI runs them (the `ci` hypothesis profile:
bounded, derandomized) and once with the `thorough` profile (many more random bad inputs),
collects what the tests measured (bad inputs tried, tracebacks, files scanned for a planted
key and its hits, full-disk and read-only outcomes), prints a table and writes JSON.

    flock /tmp/potstill-cpu.lock .venv/bin/python benchmarks/reliability.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Every test that feeds the figures; the hypothesis tests are the bad-input ones.
SUITE = [
    "tests/reliability",
    "tests/test_runs.py",
    "tests/models/test_callstore.py",
    "tests/models/test_openai_backend.py",
    "tests/test_pipeline_endpoint.py",
]
PROPERTY_TESTS = [
    "tests/reliability/test_bad_input.py",
    "tests/reliability/test_bad_templates.py",
]


def run_pytest(paths: list[str], profile: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        figures_path = Path(tmp) / "figures.json"
        env = {**os.environ, "POTSTILL_RELIABILITY_FIGURES": str(figures_path)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += [f"--hypothesis-profile={profile}", *paths]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-2000:], file=sys.stderr)
        figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    return {
        "command": " ".join(["pytest", f"--hypothesis-profile={profile}", *paths]),
        "passed": done.returncode == 0,
        "pytest": summary,
        "wall_s": round(seconds, 1),
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reliability.json"))
    args = parser.parse_args()
    results = {
        "ci": run_pytest(SUITE, "ci"),
        "thorough": run_pytest(PROPERTY_TESTS, "thorough"),
        "machine": {"cpus": os.cpu_count(), "euid": os.geteuid()},
    }
    for name in ("ci", "thorough"):
        result = results[name]
        print(f"\n{name}: {result['command']}")
        print(f"  {result['pytest']}  ({result['wall_s']} s)")
        for key, value in result.items():
            if key not in ("command", "pytest", "wall_s"):
                print(f"  {key}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    if not all(results[n]["passed"] for n in ("ci", "thorough")):
        sys.exit(1)


if __name__ == "__main__":
    main()
