"""Knowledge distillation from the teacher's top-K token distributions (train.loss: kd).

The loss at a completion token with a teacher distribution is
`kd_alpha * T^2 * KL(teacher_T || student_T) + (1 - kd_alpha) * CE`, and plain cross-entropy
at a token without one; the sum over tokens is divided by the batch's label tokens, as SFT's
loss is. The KL is sparse: the teacher's K tokens and one bucket for the mass it left out
(1 - the K probabilities), compared with the student's probabilities of the same K tokens and
of everything else. At temperature T the student's full softmax is taken at T and the
teacher's K+1 buckets are sharpened or flattened by 1/T and renormalized (its mass beyond the
top K is not known token by token). Imports torch only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# The columns a kd training row carries beside input_ids / completion_mask.
TEACHER_COLUMNS = ("teacher_start", "teacher_ids", "teacher_logprobs", "teacher_has")
# Batch tensors the collator adds, aligned with input_ids position by position.
TEACHER_KEYS = ("teacher_ids", "teacher_logprobs", "teacher_has")
# The logprob of a padding entry (a position with fewer than K tokens); at or below half of
# it an entry is padding, whatever its id.
PAD_LOGPROB = -1e4


def _log1m_exp(log_x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_x)), for log_x <= 0, kept finite where the mass left is ~0."""
    mass = log_x.exp().clamp(max=1.0 - 1e-6)
    return torch.log1p(-mass)


def bucket_logprobs(top_logprobs: torch.Tensor) -> torch.Tensor:
    """(N, K) top-K logprobs -> (N, K+1) logprobs of the K tokens and the rest bucket."""
    rest = _log1m_exp(torch.logsumexp(top_logprobs, dim=-1, keepdim=True))
    return torch.cat([top_logprobs, rest], dim=-1)


def sparse_forward_kl(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per position (N,): KL(teacher || student) over the teacher's top-K tokens plus one
    rest bucket, times T^2. student_logits (N, V); teacher_ids (N, K) long; teacher_logprobs
    (N, K), -inf or PAD_LOGPROB where a position has fewer than K tokens (the id is ignored)."""
    real = teacher_logprobs > PAD_LOGPROB / 2
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    student_top = student.gather(-1, teacher_ids.long())
    neg_inf = torch.full_like(student_top, -torch.inf)
    student_buckets = bucket_logprobs(torch.where(real, student_top, neg_inf))
    teacher = bucket_logprobs(torch.where(real, teacher_logprobs.float(), neg_inf))
    if temperature != 1.0:
        teacher = torch.log_softmax(teacher / temperature, dim=-1)
    p = teacher.exp()
    terms = torch.where(p > 0, p * (teacher - student_buckets), torch.zeros_like(p))
    return terms.sum(-1) * temperature**2


def kd_token_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_has: torch.Tensor,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per label token: (loss, KL, has-teacher mask), for logits (B, L, V) and labels and
    teacher tensors aligned with the inputs (B, L[, K]); position t-1 predicts token t."""
    target = labels[:, 1:]
    mask = target != -100
    logits = logits[:, :-1][mask]
    ce = torch.nn.functional.cross_entropy(logits.float(), target[mask], reduction="none")
    has = teacher_has[:, 1:][mask].bool()
    kl = torch.zeros_like(ce)
    if has.any():
        ids = teacher_ids[:, 1:][mask][has]
        lps = teacher_logprobs[:, 1:][mask][has]
        kl[has] = sparse_forward_kl(logits[has], ids, lps, temperature)
    loss = torch.where(has, alpha * kl + (1 - alpha) * ce, ce)
    return loss, kl, has


def teacher_collator(
    base: Callable[[list[dict[str, Any]]], dict[str, Any]], k: int, padding_free: bool
) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Wrap TRL's collator: each row's teacher distributions (stored for its completion
    tokens from `teacher_start` on) become (B, L, K) tensors aligned with input_ids, packed
    or right-padded exactly as the collator packs or pads the ids."""

    def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [dict(e) for e in examples]
        parts = []
        for row in rows:
            n_ids = len(row["input_ids"])
            start = int(row.pop("teacher_start"))
            ids, lps, has = (
                torch.zeros(n_ids, k, dtype=torch.long),
                torch.zeros(n_ids, k),
                torch.zeros(n_ids),
            )
            got = torch.tensor(row.pop("teacher_ids"), dtype=torch.long).reshape(-1, k)
            n = got.shape[0]
            ids[start : start + n] = got
            lps[start : start + n] = torch.tensor(row.pop("teacher_logprobs")).reshape(-1, k)
            has[start : start + n] = torch.tensor(row.pop("teacher_has"), dtype=torch.float)
            parts.append((ids, lps, has))
        batch = base(rows)
        length = batch["input_ids"].shape[1]
        groups = [parts] if not padding_free else [[tuple(torch.cat(x) for x in zip(*parts))]]
        for key, index in zip(TEACHER_KEYS, range(3)):
            stacked = []
            for group in groups:
                for part in group:
                    t = part[index]
                    pad = [0, 0] * (t.dim() - 1) + [0, length - t.shape[0]]
                    stacked.append(torch.nn.functional.pad(t, pad))
            batch[key] = torch.stack(stacked)
        return batch

    return collate
