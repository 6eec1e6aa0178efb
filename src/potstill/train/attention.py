"""`potstill_varlen`: attention over packed (padding-free) batches with PyTorch's own flash
varlen kernel (`torch.nn.attention.varlen`), for GPUs without the flash-attn package.

A packed batch is one row holding several sequences one after the other; each sequence's
positions restart at 0 and the collator gives the boundaries (`cu_seq_lens_q`). Attention
runs within each sequence only, so no row ever sees another, and no compute goes to padding
or to the masked-out blocks a dense block-diagonal mask would still pay for. Without a CUDA
kernel (on the CPU) the same function attends one sequence at a time with SDPA: slower, same
result, which lets tests check the packing on any machine. This module imports neither TRL nor
potstill's training stack, so a bare torch + transformers benchmark can use it.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

NAME = "potstill_varlen"


def boundaries(position_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative sequence starts (int32, with the total at the end) of a packed row whose
    positions restart at 0 for each sequence."""
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    total = torch.tensor([flat.numel()], device=flat.device)
    return torch.cat([starts, total]).to(torch.int32)


def _make_flash() -> Callable[..., torch.Tensor] | None:
    """A call into PyTorch's flash varlen kernel for q, k, v of shape (tokens, heads, dim), or
    None without one. The API changed between releases (is_causal, then window_size; scale and
    enable_gqa came later), so the call is fitted to the installed signature once, here, and
    not inside a compiled graph."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal: dict[str, Any] = (
        {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    )
    has_scale, has_gqa = "scale" in params, "enable_gqa" in params

    def call(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu: torch.Tensor,
        max_len: int,
        scale: float,
    ) -> torch.Tensor:
        extra: dict[str, Any] = dict(causal)
        if has_scale:
            extra["scale"] = scale
        elif scale != q.shape[-1] ** -0.5:
            q = q * (scale * q.shape[-1] ** 0.5)
        if k.shape[1] != q.shape[1]:
            if has_gqa:
                extra["enable_gqa"] = True
            else:
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
                v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, **extra)
        return out[0] if isinstance(out, tuple) else out

    return call


_FLASH: Callable[..., torch.Tensor] | None = None


def _per_sequence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, scale: float
) -> torch.Tensor:
    """The reference path: causal SDPA on each sequence alone. q, k, v: (tokens, heads, dim)."""
    n_rep = q.shape[1] // k.shape[1]
    parts = []
    edges = cu.tolist()
    for start, end in itertools.pairwise(edges):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))
        if n_rep > 1:
            ks, vs = ks.repeat_interleave(n_rep, dim=0), vs.repeat_interleave(n_rep, dim=0)
        parts.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale))
    return torch.cat(parts, dim=1).transpose(0, 1)


def varlen_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (batch, heads, tokens, dim)."""
    batch, _, tokens, dim = query.shape
    if attention_mask is not None or batch != 1:
        # A padded batch (each row one sequence): plain SDPA with the padding mask.
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    scale = scaling if scaling is not None else dim**-0.5
    cu = kwargs.get("cu_seq_lens_q")
    max_len = kwargs.get("max_length_q")
    if cu is None:
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            cu = torch.tensor([0, tokens], dtype=torch.int32, device=query.device)
        else:
            cu = boundaries(position_ids).to(query.device)
    if max_len is None:
        max_len = int(cu.diff().max())
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    if query.is_cuda and _FLASH is not None and query.dtype in (torch.float16, torch.bfloat16):
        out = _FLASH(q, k, v, cu.to(torch.int32), int(max_len), scale)
    else:
        out = _per_sequence(q, k, v, cu, scale)
    return out.unsqueeze(0), None  # (1, tokens, heads, dim), as the model expects


def _mask(*args: Any, **kwargs: Any) -> Any:
    """No dense mask for a single (packed) row; the SDPA mask for a padded batch."""
    from transformers.masking_utils import sdpa_mask

    batch_size = kwargs.get("batch_size", args[0] if args else 1)
    if batch_size == 1 and kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Make `potstill_varlen` a transformers attention implementation; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    global _FLASH
    if _FLASH is None and torch.cuda.is_available():
        _FLASH = _make_flash()
    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, _mask)
    return NAME
