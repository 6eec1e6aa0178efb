"""`potstill synth RUN --dry-run` against the cost of the real run, with known token counts:
the review teacher (tests/conftest.py) counts tokens with the real SmolLM2 tokenizer and chat
template, as a vLLM server reports them."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import review_reply
from typer.testing import CliRunner

from potstill.cli import app
from potstill.pipeline import estimate_synth
from potstill.runs import RunFolder

SHOTS = [
    {
        "inputs": {"text": "Review 900: the fridge was great."},
        "reason": "Great is praise.",
        "answer": "good",
    },
    {
        "inputs": {"text": "Review 901: the sofa was awful."},
        "reason": "Awful is a complaint.",
        "answer": "bad",
    },
]


def test_dry_run_estimate_is_within_20_percent_of_the_real_cost(
    fake_teacher: Callable[..., Any],
    review_run: Callable[..., RunFolder],
    smollm2_tokenizer_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    teacher = fake_teacher(tokenizer=tokenizer)
    # What the user knows beforehand: the teacher's replies run to about this many tokens.
    typical = review_reply(
        {
            "messages": [{"role": "user", "content": "Review 5: the lamp was lovely."}],
            "temperature": 0.0,
            "seed": 0,
        }
    )
    expected = len(tokenizer(typical)["input_ids"])
    run = review_run(
        teacher.url,
        rows=44,
        synth={"samples": 2, "generate": {"per_seed": 1, "seeds": 4}},
        model={"price_per_million_input": 3.0, "price_per_million_output": 15.0},
        prompt={"shots": SHOTS},
        budget={"expected_completion_tokens": expected},
    )
    config = run.load_config()

    shown = CliRunner().invoke(app, ["synth", str(run.root), "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert "nothing sent" in shown.output and "expected" in shown.output
    assert not teacher.attempts  # nothing was sent
    found = estimate_synth(run, config)
    generate, label, total = found["phases"]
    assert (generate["calls"], label["calls"], total["stored"]) == (4, 88, 0)

    result = CliRunner().invoke(app, ["synth", str(run.root)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run.synth_dir / "summary.json").read_text())
    actual = summary["cost"]
    assert actual["calls"] == total["calls"] == 92
    assert abs(total["usd"] - actual["usd"]) <= 0.2 * actual["usd"]
    assert abs(total["prompt_tokens"] - actual["prompt_tokens"]) <= 0.2 * actual["prompt_tokens"]

    # With the teacher's tokenizer named, prompt tokens are counted, not estimated.
    exact = config.model_copy(
        update={
            "budget": config.budget.model_copy(update={"tokenizer": str(smollm2_tokenizer_dir)})
        }
    )
    fresh = RunFolder(run.root.parent / "fresh")
    fresh.root.mkdir()
    fresh.save_config(exact)
    counted = estimate_synth(fresh, exact)["phases"][1]["prompt_tokens"]
    labelled = sum(p for body, p, _ in teacher.usage if "You write new inputs" not in str(body))
    assert abs(counted - labelled) <= 0.03 * labelled
    print(f"dry-run estimate ${total['usd']:.6f}, actual ${actual['usd']:.6f}")
