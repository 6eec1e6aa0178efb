"""synth.logprobs: the teacher's top-K at every token of every kept row, from an endpoint's
`top_logprobs` (tests/fault_server.py) or a local teacher's own logits, stored compactly in
synth/logprobs.npz, cached with the calls, and counted in the card."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_server import FaultServer, logprob_content

from potstill.files import read_jsonl
from potstill.models.base import ChatResponse
from potstill.models.callstore import CallStore
from potstill.pipeline import run_stage
from potstill.runs import RunFolder
from potstill.synth import logprobs as synth_logprobs

POSITIVE = ("great", "lovely", "superb", "fine")


def _reply(body: dict[str, Any]) -> str:
    text = body["messages"][-1]["content"]
    label = "good" if any(w in text for w in POSITIVE) else "bad"
    return json.dumps({"reason": f"It says {text.split()[-1]}", "answer": label})


def _server(tokenizer: Any, send: bool = True) -> FaultServer:
    def logprobs(body: dict[str, Any], text: str) -> list[dict[str, Any]] | None:
        if not send:
            return None
        tokens = [tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False)]
        return logprob_content(tokens, ["good", "bad", " the"], body["top_logprobs"])

    return FaultServer(reply=_reply, logprobs=logprobs)


def _students(model_dir: Path) -> list[dict[str, Any]]:
    return [{"name": "kd", "base": {"model": str(model_dir)}, "train": {"loss": "kd"}}]


def test_an_endpoints_top_logprobs_are_kept_at_the_answers_aligned_span(
    review_run: Callable[..., RunFolder], tiny_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    server = _server(tokenizer)
    url = server.start()
    try:
        run = review_run(url, rows=8, synth={"logprobs": 3}, students=_students(tiny_model_dir))
        summary = run_stage(run, run.load_config(), "synth")
    finally:
        server.stop()
    rows = read_jsonl(run.synth_dir / "train.jsonl")
    dists = synth_logprobs.read(run.synth_dir / synth_logprobs.FILE)
    assert summary["logprobs"]["rows"] == {"aligned": len(rows)} == dists.counts
    assert dists.k == 3 and dists.vocab == synth_logprobs.vocab_digest(tokenizer)
    for row in rows:
        found = dists.rows[row["id"]]
        answer = row["completion"][0]["content"]  # target: answer, cut out of the cot JSON
        content = tokenizer.encode(answer, add_special_tokens=False)
        assert found.has.tolist() == [1] * len(content) + [0] * (len(found.has) - len(content))
        # The teacher's own token at each aligned position, at its logprob, then the others.
        assert found.top_ids[: len(content), 0].tolist() == content
        np.testing.assert_allclose(found.top_logprobs[: len(content), 0], -0.1)
    card = (run.synth_dir / "card.md").read_text()
    assert (
        f"teacher top-3 logprobs (synth/logprobs.npz, docs/training.md): {len(rows)} rows" in card
    )


def test_an_endpoint_without_logprobs_is_an_error_after_one_call(
    review_run: Callable[..., RunFolder], tiny_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    server = _server(AutoTokenizer.from_pretrained(tiny_model_dir), send=False)
    url = server.start()
    try:
        run = review_run(url, rows=8, synth={"logprobs": 3}, students=_students(tiny_model_dir))
        with pytest.raises(synth_logprobs.NoLogprobs, match=r"synth\.logprobs: 3 .* returned none"):
            run_stage(run, run.load_config(), "synth")
    finally:
        server.stop()
    assert len(server.log) == 1  # the budget is not spent on replies without them
    assert not (run.synth_dir / synth_logprobs.FILE).exists()


class _Teacher:
    def __init__(self, folder: Path) -> None:
        from potstill.models.packaged import load_pretrained

        self.tokenizer, self.model = load_pretrained(str(folder))
        self.model.eval()
        self.identity = f"local:{folder}"


PROMPT = [{"role": "user", "content": "Paul has 14 crayons and gets 5 more. How many now?"}]
TEACHER_PROMPT = [{"role": "system", "content": "Reply in JSON."}, *PROMPT]


def _row(i: str, answer: str) -> dict[str, Any]:
    return {
        "id": i,
        "prompt": PROMPT,
        "completion": [{"role": "assistant", "content": answer}],
    }


def test_a_local_teacher_aligns_or_rescores_and_caches_its_scoring(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = _Teacher(tiny_model_dir)
    kept = [
        # The answer is a run of the reply's tokens: the teacher's distributions there.
        synth_logprobs.Kept(
            _row("a", "14 + 5"),
            TEACHER_PROMPT,
            ChatResponse('{"reason": "add", "answer": "14 + 5"}'),
        ),
        # Not in the reply: scored as the teacher's reply to its own prompt.
        synth_logprobs.Kept(_row("b", "19"), TEACHER_PROMPT, ChatResponse("I think 14 + 5")),
    ]
    store = CallStore(tmp_path / "calls.sqlite")
    first = synth_logprobs.teacher_distributions(kept, teacher, store, 4)
    assert first.counts == {"aligned": 1, "rescored": 1}
    a, b = first.rows["a"], first.rows["b"]
    tail = synth_logprobs.trailing_template_tokens(teacher.tokenizer, a.tokens.tolist())
    assert a.has.tolist() == [1] * (len(a.has) - tail) + [0] * tail  # end of turn: none
    assert b.has.all()  # re-scored: every token, its end of turn too
    expected = synth_logprobs.teacher_forced_topk(
        teacher.model, teacher.tokenizer, TEACHER_PROMPT, "19", 4
    )
    np.testing.assert_allclose(b.top_logprobs, expected.top_logprobs, rtol=1e-5)

    def no_forward_pass(*args: Any) -> None:
        raise AssertionError("a stored scoring call was computed again")

    monkeypatch.setattr(synth_logprobs, "teacher_forced_topk", no_forward_pass)
    again = synth_logprobs.teacher_distributions(kept, teacher, store, 4)
    store.close()
    for key in ("a", "b"):
        np.testing.assert_array_equal(again.rows[key].top_ids, first.rows[key].top_ids)
    path = tmp_path / synth_logprobs.FILE
    synth_logprobs.write(path, again)
    back = synth_logprobs.read(path)
    assert back.counts == first.counts
    np.testing.assert_array_equal(back.rows["a"].top_logprobs, first.rows["a"].top_logprobs)


def test_a_damaged_distributions_file_names_itself(tmp_path: Path) -> None:
    from potstill.errors import DamagedRunFile

    path = tmp_path / synth_logprobs.FILE
    path.write_bytes(b"not a zip")
    with pytest.raises(DamagedRunFile, match=r"logprobs\.npz"):
        synth_logprobs.read(path)
