"""A test helper (not a fixture): teacher distributions for training rows, written as the synth
stage writes them (synth/logprobs.npz), scored by a local model as its own teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def score_rows(run: Any, model_dir: Path, rows: list[dict[str, Any]], k: int = 4) -> dict[str, int]:
    """synth/logprobs.npz for `rows`, the model in `model_dir` scoring each completion as its
    own teacher (the aligned span of a reply equal to the completion); returns the counts."""
    from potstill.models.base import ChatResponse
    from potstill.models.callstore import CallStore
    from potstill.models.packaged import load_pretrained
    from potstill.synth import logprobs as synth_logprobs

    class Teacher:
        def __init__(self) -> None:
            self.tokenizer, self.model = load_pretrained(str(model_dir))
            self.model.eval()
            self.identity = f"local:{model_dir}"

    kept = [
        synth_logprobs.Kept(r, r["prompt"], ChatResponse(r["completion"][0]["content"]))
        for r in rows
    ]
    run.root.mkdir(parents=True, exist_ok=True)
    store = CallStore(run.root / "teacher-scores.sqlite")
    try:
        dists = synth_logprobs.teacher_distributions(kept, Teacher(), store, k)
    finally:
        store.close()
    synth_logprobs.write(run.synth_dir / synth_logprobs.FILE, dists)
    return dists.counts
