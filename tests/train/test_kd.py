"""train.loss kd: the sparse forward KL against hand-computed values on toy distributions,
its mix with cross-entropy, and teacher tensors that stay aligned with the tokens when rows
are packed or padded."""

import math

import numpy as np
import pytest
import torch

from potstill.records import TrainLogEntry, read_records, write_training_rows
from potstill.train.kd import (
    PAD_LOGPROB,
    kd_token_losses,
    sparse_forward_kl,
    teacher_collator,
)

TEACHER = np.array([0.5, 0.2, 0.15, 0.1, 0.05])  # over a 5-token vocabulary
STUDENT_LOGITS = np.array([1.0, 0.2, -0.5, 0.3, 0.0])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _analytic(k: int, temperature: float = 1.0) -> float:
    """KL over the teacher's top-k tokens plus one bucket for the rest, written out by hand:
    the student's softmax at T, the teacher's k+1 buckets raised to 1/T and renormalized."""
    top = np.argsort(-TEACHER)[:k]
    p = np.append(TEACHER[top], 1 - TEACHER[top].sum()) ** (1 / temperature)
    p = p / p.sum()
    q_full = _softmax(STUDENT_LOGITS / temperature)
    q = np.append(q_full[top], 1 - q_full[top].sum())
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)) * temperature**2


def _ours(k: int, temperature: float = 1.0) -> float:
    top = np.argsort(-TEACHER)[:k]
    ids = torch.tensor(np.array([top]))
    lps = torch.log(torch.tensor(np.array([TEACHER[top]]), dtype=torch.float32))
    logits = torch.tensor([STUDENT_LOGITS], dtype=torch.float32)
    return float(sparse_forward_kl(logits, ids, lps, temperature)[0])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_sparse_kl_equals_the_analytic_kl_on_toy_distributions(k: int) -> None:
    assert _ours(k) == pytest.approx(_analytic(k), rel=1e-5, abs=1e-7)


def test_with_every_token_it_is_the_full_forward_kl() -> None:
    q = _softmax(STUDENT_LOGITS)
    full = float(np.sum(TEACHER * np.log(TEACHER / q)))
    assert _ours(5) == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_matches_the_analytic_form(temperature: float) -> None:
    assert _ours(3, temperature) == pytest.approx(_analytic(3, temperature), rel=1e-5)


def test_control_a_kl_without_the_rest_bucket_is_told_apart() -> None:
    # The control: the top-k renormalized, the rest dropped (a common shortcut) is another
    # number, so the comparison above can fail.
    top = np.argsort(-TEACHER)[:2]
    p = TEACHER[top] / TEACHER[top].sum()
    q = _softmax(STUDENT_LOGITS)[top]
    q = q / q.sum()
    shortcut = float(np.sum(p * np.log(p / q)))
    assert _ours(2) != pytest.approx(shortcut, rel=1e-3)
    assert _ours(2) == pytest.approx(_analytic(2), rel=1e-5)


def test_padding_entries_count_for_nothing() -> None:
    top = np.argsort(-TEACHER)[:2]
    logits = torch.tensor([STUDENT_LOGITS], dtype=torch.float32)
    lps = torch.log(torch.tensor(np.array([TEACHER[top]]), dtype=torch.float32))
    padded_ids = torch.tensor([[*top, 0, 0]])
    padded_lps = torch.cat([lps, torch.full((1, 2), PAD_LOGPROB)], dim=1)
    got = float(sparse_forward_kl(logits, padded_ids, padded_lps)[0])
    assert got == pytest.approx(_analytic(2), rel=1e-5)


def test_alpha_mixes_kl_and_cross_entropy_and_tokens_without_teacher_get_ce() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7)
    labels = torch.tensor([[-100, 3, 5, 1]])
    ids = torch.tensor([[0, 1, 2]] * 4).unsqueeze(0)
    lps = torch.log_softmax(torch.randn(1, 4, 3), -1) - 0.5
    has = torch.tensor([[0.0, 1.0, 0.0, 1.0]])  # token 2 (label 5) has no teacher
    ce = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], reduction="none")
    for alpha in (0.0, 0.3, 1.0):
        loss, kl, got_has = kd_token_losses(logits, labels, ids, lps, has, alpha, 1.0)
        assert got_has.tolist() == [True, False, True]
        kl_ref = sparse_forward_kl(logits[0, [0, 2]], ids[0, [1, 3]], lps[0, [1, 3]])
        assert kl[[0, 2]] == pytest.approx(kl_ref)
        expected = torch.stack(
            [
                alpha * kl_ref[0] + (1 - alpha) * ce[0],
                ce[1],
                alpha * kl_ref[1] + (1 - alpha) * ce[2],
            ]
        )
        assert loss == pytest.approx(expected, rel=1e-5)


def _collate_rows() -> list[dict[str, object]]:
    # Two rows: prompt tokens then completion tokens; the teacher covers the completions.
    k = 2
    rows = []
    for n_prompt, n_completion, base in ((3, 2, 10), (2, 3, 20)):
        ids = list(range(base, base + n_prompt + n_completion))
        rows.append(
            {
                "input_ids": ids,
                "labels": [-100] * n_prompt + ids[n_prompt:],
                "teacher_start": n_prompt,
                "teacher_ids": [t for t in ids[n_prompt:] for _ in range(k)],
                "teacher_logprobs": [-0.1] * (n_completion * k),
                "teacher_has": [1] * n_completion,
            }
        )
    return rows


@pytest.mark.parametrize("padding_free", [True, False])
def test_teacher_tensors_line_up_with_the_tokens_packed_or_padded(padding_free: bool) -> None:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    base = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)
    batch = teacher_collator(base, 2, padding_free)(_collate_rows())
    assert batch["teacher_ids"].shape[:2] == batch["input_ids"].shape
    has = batch["teacher_has"].bool()
    # Every completion token carries its teacher distribution, and that distribution is the
    # one stored for that very token (here its own id, so the two must agree).
    assert has.tolist() == (batch["labels"] != -100).tolist()
    assert (batch["teacher_ids"][..., 0][has] == batch["input_ids"][has]).all()


# --- the kd student through the train stage ----------------------------------------------

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from teacher_scores import score_rows  # noqa: E402

from potstill.config import RunConfig, parse_config  # noqa: E402
from potstill.runs import RunFolder  # noqa: E402
from potstill.synth import logprobs as synth_logprobs  # noqa: E402
from potstill.tasks import build_task  # noqa: E402
from potstill.train.lint import TrainingDataError  # noqa: E402
from potstill.train.stage import train_student  # noqa: E402

ROWS = [
    {
        "id": str(i),
        "prompt": [{"role": "user", "content": f"Tom has {i} apples and buys {i % 3 + 2} more."}],
        "completion": [{"role": "assistant", "content": f"{i} + {i % 3 + 2}" + " + 0" * (i % 4)}],
    }
    for i in range(8)
]


def _config(model_dir: Path, **train: Any) -> RunConfig:
    settings = {"epochs": 1, "batch_size": 2, "learning_rate": 1e-2, "save_steps": 2}
    settings.update({"dev_fraction": 0.25, **train})
    tree = {
        "name": "t",
        "task": {"kind": "math", "calculator": True},
        "dataset": {"path": "x.jsonl"},
        "synth": {"logprobs": 4},
        "students": [{"name": "s", "base": {"model": str(model_dir)}, "train": settings}],
    }
    return parse_config(tree, "t.yaml")


def _train(run: RunFolder, config: RunConfig) -> tuple[dict[str, Any], list[float]]:
    summary = train_student(run, config, build_task(config.task), config.students[0])
    log = [
        e.as_written()
        for e in read_records(run.student_dir("s") / "train_log.jsonl", TrainLogEntry)
    ]
    return summary, [e["loss"] for e in log if "loss" in e]


def _run(root: Path, model_dir: Path) -> RunFolder:
    run = RunFolder(root)
    write_training_rows(run.synth_dir / "train.jsonl", ROWS)
    assert score_rows(run, model_dir, ROWS) == {"aligned": len(ROWS)}
    return run


@pytest.mark.parametrize("batching", ["padding_free", "length_grouped"])
def test_kd_at_alpha_zero_is_sft_and_above_it_trains(
    tiny_model_dir: Path, tmp_path: Path, batching: str
) -> None:
    # With kd_alpha 0 the kd path computes exactly SFT's loss (the same tokens, the same
    # normalization), packed or padded; with alpha 0.5 the curve differs and stays finite.
    curves = {}
    for loss, alpha in (("sft", 0.0), ("kd", 0.0), ("kd", 0.5)):
        if batching == "length_grouped" and alpha > 0:
            continue  # the kd term's own path is the same packed or padded (collator test)
        run = _run(tmp_path / f"{loss}-{alpha}", tiny_model_dir)
        config = _config(tiny_model_dir, loss=loss, kd_alpha=alpha, batching=batching)
        summary, curves[(loss, alpha)] = _train(run, config)
        assert summary["loss"] == loss
    assert summary["kd_rows_without_teacher"] == 0
    assert curves[("kd", 0.0)] == pytest.approx(curves[("sft", 0.0)], rel=1e-4)
    if batching == "padding_free":
        assert curves[("kd", 0.5)] != pytest.approx(curves[("sft", 0.0)], rel=1e-3)
        assert all(math.isfinite(x) for x in curves[("kd", 0.5)])


def test_a_student_with_another_vocabulary_is_refused_before_training(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = _run(tmp_path / "run", tiny_model_dir)
    path = run.synth_dir / synth_logprobs.FILE
    dists = synth_logprobs.read(path)
    dists.vocab = "0000000000000000"  # as a teacher of another family would have
    synth_logprobs.write(path, dists)
    with pytest.raises(TrainingDataError, match="needs the teacher's tokenizer"):
        _train(run, _config(tiny_model_dir, loss="kd"))
    assert not (run.student_dir("s") / "checkpoints").exists()


def test_kd_without_distributions_names_the_setting(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    write_training_rows(run.synth_dir / "train.jsonl", ROWS)
    with pytest.raises(TrainingDataError, match=r"set synth\.logprobs"):
        _train(run, _config(tiny_model_dir, loss="kd"))


def test_kd_needs_synth_logprobs_in_the_config(tiny_model_dir: Path) -> None:
    from potstill.config import ConfigError

    tree = _config(tiny_model_dir, loss="kd").model_dump(mode="json")
    tree["synth"]["logprobs"] = None
    with pytest.raises(ConfigError, match=r"students.0.train.loss.*synth.logprobs"):
        parse_config(tree, "t.yaml")
