"""The `local` backend: a transformers model in this process, batched with left padding."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.packaged import inference_placement, load_pretrained, resolve_local_ref
from potstill.models.tokens import chat_token_ids


def _fingerprint(path: str) -> str:
    """Identify the weights, so a retrained model never reuses another's cached calls."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path}@{digest.hexdigest()[:12]}"


def local_identity(ref: str) -> str:
    """The call-store identity of a local model, known without loading its weights."""
    return f"local:{_fingerprint(resolve_local_ref(ref))}"


# Below this many shared tokens, computing a separate prefix cache is not worth it.
MIN_SHARED_PREFIX = 32


def _common_prefix_len(sequences: list[list[int]]) -> int:
    """Tokens every sequence starts with, keeping at least one token of each sequence apart."""
    if not sequences:
        return 0
    limit = min(len(s) for s in sequences) - 1
    first = sequences[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


def _buffer_cache(
    prefix: Any, rows: int, capacity: int, model: Any, share_prefix: bool = False
) -> Any:
    """A KV cache for `rows` sequences of up to `capacity` tokens, allocated once.

    transformers' DynamicCache concatenates every layer's keys and values with each new
    token, copying the whole cache at every step: with a few-shot prompt of 500 tokens in
    16 rows that copying was half of generation's time on a CPU. Here each layer writes the
    new tokens into its buffer and hands attention a view of the filled part: the same
    values as the concatenated tensors, so the same arithmetic. `prefix` (a batch-1 cache of
    the shared prompt prefix, or None) fills the first positions of every row.

    With `share_prefix`, the prefix is not copied into each row: the buffers hold only what
    follows it, `prefix_layers` holds the prefix's (keys, values) once, and attention must
    be `_prefix_attention` (which reads both); the cache's length still counts the prefix.
    """
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    class BufferLayer(DynamicLayer):  # type: ignore[misc]
        def __init__(self, keys: Any, values: Any, length: int, offset: int = 0) -> None:
            super().__init__()
            self._keys, self._values, self.length = keys, values, length
            self.offset = offset  # shared-prefix tokens before the buffer (not in it)
            self.device = keys.device
            self.is_initialized = True
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            end = self.length + key_states.shape[-2]
            if end > self._keys.shape[-2]:
                raise RuntimeError(f"KV buffer of {self._keys.shape[-2]} tokens overflowed")
            self._keys[:, :, self.length : end] = key_states
            self._values[:, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.offset + self.length

        def select_rows(self, index: Any) -> None:
            """Keep only the batch rows `index` (rows that finished leave the batch)."""
            self._keys = self._keys.index_select(0, index)
            self._values = self._values.index_select(0, index)
            self.keys = self._keys[:, :, : self.length]
            self.values = self._values[:, :, : self.length]

    class BufferCache(DynamicCache):  # type: ignore[misc]
        def __init__(self, layers: list[Any]) -> None:
            Cache.__init__(self, layers=layers)
            self.prefix_layers: list[tuple[Any, Any]] | None = None

    import torch

    config = model.config.get_text_config(decoder=True)
    heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    shared = share_prefix and prefix is not None
    offset = prefix.layers[0].keys.shape[-2] if shared else 0
    shape = (rows, heads, capacity - offset, head_dim)
    layers = []
    for i in range(config.num_hidden_layers):
        keys = torch.empty(shape, dtype=model.dtype, device=model.device)
        values = torch.empty(shape, dtype=model.dtype, device=model.device)
        length = 0
        if prefix is not None and not shared:
            length = prefix.layers[i].keys.shape[-2]
            keys[:, :, :length] = prefix.layers[i].keys
            values[:, :, :length] = prefix.layers[i].values
        layers.append(BufferLayer(keys, values, length, offset))
    cache = BufferCache(layers)
    if shared:
        cache.prefix_layers = [(layer.keys, layer.values) for layer in prefix.layers]
    return cache


# The attention implementation `_decode_loop` switches the model to while it runs with a
# shared prefix; other threads (and any call outside the loop) fall through to sdpa.
PREFIX_ATTENTION = "potstill_shared_prefix"
_prefix_state = threading.local()


def _prefix_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention over a shared prefix (stored once) followed by each row's own tokens.

    A plain cache holds the few-shot prefix once per row and attention reads it once per
    row at every step (for 16 rows of the demo teacher's 8-shot prompt, 450 MB a step). Here
    the scores of every row's queries against the prefix are one matrix product per KV
    head, the scores against each row's tokens another, and one softmax runs over both: the
    same attention, with the sums in another order (so a last-bit difference can change a
    greedy token where two are nearly tied). `key`/`value` hold only the rows' own tokens.
    """
    layers = getattr(_prefix_state, "layers", None)
    if layers is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    import torch

    prefix_keys, prefix_values = layers[module.layer_idx]  # [1, kv heads, prefix, dim]
    rows, heads, q, dim = query.shape
    kv_heads, own, shared = key.shape[1], key.shape[2], prefix_keys.shape[2]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    grouped = query.reshape(rows, kv_heads, group * q, dim)
    flat = grouped.transpose(0, 1).reshape(kv_heads, rows * group * q, dim)
    on_prefix = torch.matmul(flat, prefix_keys[0].transpose(1, 2))
    on_prefix = on_prefix.view(kv_heads, rows, group * q, shared).transpose(0, 1)
    on_own = torch.matmul(grouped, key.transpose(2, 3))
    scores = torch.cat([on_prefix, on_own], dim=-1).float() * scale
    scores = scores.view(rows, kv_heads, group, q, shared + own)
    if attention_mask is not None:
        visible = attention_mask[..., -own:]  # [rows or 1, 1, q, own]; the prefix is all seen
        if visible.dtype != torch.bool:
            visible = visible == 0
        visible = visible.unsqueeze(1)
    else:  # no padding left: causal among the rows' own tokens
        visible = torch.ones(q, own, dtype=torch.bool, device=query.device).tril(own - q)
    scores[..., shared:] = scores[..., shared:].masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(query.dtype).view(rows, kv_heads, group * q, -1)
    from_prefix = torch.matmul(
        probs[..., :shared].transpose(0, 1).reshape(kv_heads, rows * group * q, shared),
        prefix_values[0],
    )
    out = from_prefix.view(kv_heads, rows, group * q, dim).transpose(0, 1)
    out = out + torch.matmul(probs[..., shared:], value)
    return out.reshape(rows, heads, q, dim).transpose(1, 2).contiguous(), None


def _register_prefix_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PREFIX_ATTENTION, _prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PREFIX_ATTENTION, sdpa_mask)


# Inside `_decode_loop` on a CPU, the model's linear layers run on oneDNN (`_onednn_linears`).
_linear_state = threading.local()


def _onednn_available(model: Any) -> bool:
    import torch

    return (
        model.device.type == "cpu"
        and model.dtype == torch.float32
        and torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def _onednn_linears(model: Any) -> None:
    """Give every linear layer of `model` a oneDNN copy of its weights, used in the loop.

    On this project's CPUs (AMD EPYC, AVX-512) MKL's fp32 GEMM reached about half of what
    oneDNN's does at the shapes of a decode step (16-64 rows) and of the LM head; they are
    the same products summed in another order (last-bit differences, so a nearly tied
    greedy token can change). The packed copy costs the weights' size again in memory.
    Outside the loop (the growing-cache path, training, the continuous batcher) each layer
    computes as before.
    """
    import torch

    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or hasattr(module, "_potstill_packed"):
            continue
        packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), None)

        def forward(x: Any, module: Any = module, packed: Any = packed) -> Any:
            if getattr(_linear_state, "on", False):
                return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "none", [], "")
            return torch.nn.functional.linear(x, module.weight, module.bias)

        module._potstill_packed = packed
        module.forward = forward  # type: ignore[method-assign,assignment]


def last_logits(model: Any, ids: Any, mask: Any, cache: Any) -> Any:
    """Float32 next-token logits of each row after `ids`, whose KV goes into `cache`.

    `mask` covers the cache's tokens and `ids` (0 for padding); positions follow it, and only
    the last position's logits are computed (the LM head is a tenth of a decode step).
    Shared by `LocalChatModel`'s decode loop and `potstill serve`'s continuous batcher.
    """
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :].float()


class LocalChatModel:
    """Generates in batches of `batch_size`; requests are sorted by length to waste less padding.

    The KV cache is allocated once per batch (`_buffer_cache`) and tokens come from
    potstill's own decode loop (`_decode_loop`), which drops finished rows from the batch.
    `own_loop=False` generates with `model.generate` on the same cache instead, and
    `buffer_cache=False` with `model.generate` on transformers' own growing cache (the old
    path); both are kept for the benchmark and the tests that all give the same tokens."""

    def __init__(
        self, ref: str, batch_size: int = 8, buffer_cache: bool = True, own_loop: bool = True
    ) -> None:
        self.path = resolve_local_ref(ref)
        self.batch_size = batch_size
        self.buffer_cache = buffer_cache
        self.own_loop = own_loop
        # On a CPU the own loop keeps a shared prefix once for all rows (`_prefix_attention`)
        # and runs the linear layers on oneDNN (`_onednn_linears`).
        self.shared_attention = True
        self.onednn = True
        self.tokenizer, self.model = load_pretrained(self.path)
        self.model.to(**inference_placement())
        self.model.eval()
        self._identity = f"local:{_fingerprint(self.path)}"
        self._lock = threading.Lock()
        self._prefix_key: tuple[int, ...] = ()
        self._prefix_cache: Any = None

    @property
    def identity(self) -> str:
        return self._identity

    def _stop_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        stop = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        return stop

    def _shared_prefix_cache(self, prefix: list[int]) -> Any:
        """The KV cache of a prompt prefix every request shares (system prompt and shots).

        Few-shot prompts repeat hundreds of tokens per request; computing them once and
        reusing the cache makes prefill cost only the part that differs.
        """
        import torch

        key = tuple(prefix)
        if self._prefix_key != key:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                self.model(
                    input_ids=torch.tensor([prefix], device=self.model.device),
                    cache=cache,
                    use_cache=True,
                )
            self._prefix_key, self._prefix_cache = key, cache
        return self._prefix_cache

    def _generate_batch(
        self, batch: Sequence[ChatRequest], ids: list[list[int]], shared: int
    ) -> list[ChatResponse]:
        """Generate for one batch of prompt token ids; the first `shared` are in every prompt."""
        import torch

        prefix = ids[0][:shared] if shared >= MIN_SHARED_PREFIX else []
        tails = [x[len(prefix) :] for x in ids]
        width = max(len(t) for t in tails)
        pad = int(self.tokenizer.pad_token_id)
        # Padding goes between the shared prefix and each tail; position ids follow the mask.
        input_ids = [prefix + [pad] * (width - len(t)) + t for t in tails]
        mask = [[1] * len(prefix) + [0] * (width - len(t)) + [1] * len(t) for t in tails]
        first = batch[0]
        if self.buffer_cache and self.own_loop:
            capacity = len(input_ids[0]) + max(r.max_tokens for r in batch)
            shared_cache = self._shared_prefix_cache(prefix) if prefix else None
            # Measured on a CPU only; a GPU keeps the prefix in every row (sdpa attention).
            share = self.shared_attention and self.model.device.type == "cpu"
            cache = _buffer_cache(shared_cache, len(batch), capacity, self.model, share)
            start = time.perf_counter()
            with self._lock, torch.inference_mode():
                new_tokens = self._decode_loop(
                    input_ids,
                    mask,
                    cache,
                    [r.max_tokens for r in batch],
                    first.temperature,
                    first.sample_index,
                )
            latency = time.perf_counter() - start
            return self._decode(batch, new_tokens, [len(x) for x in ids], latency)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.max_tokens for r in batch),
            "pad_token_id": pad,
            "eos_token_id": sorted(self._stop_ids()),
        }
        if self.buffer_cache:
            capacity = len(input_ids[0]) + kwargs["max_new_tokens"]
            shared_cache = self._shared_prefix_cache(prefix) if prefix else None
            kwargs["cache"] = _buffer_cache(shared_cache, len(batch), capacity, self.model)
        elif prefix:
            cache = copy.deepcopy(self._shared_prefix_cache(prefix))
            cache.batch_repeat_interleave(len(batch))
            kwargs["cache"] = cache
        if first.temperature > 0:
            torch.manual_seed(first.sample_index)
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        start = time.perf_counter()
        with self._lock, torch.inference_mode():
            out = self.model.generate(
                input_ids=torch.tensor(input_ids, device=self.model.device),
                attention_mask=torch.tensor(mask, device=self.model.device),
                **kwargs,
            )
        latency = time.perf_counter() - start
        new_tokens = out[:, len(input_ids[0]) :].tolist()
        return self._decode(batch, new_tokens, [len(x) for x in ids], latency)

    def _decode_loop(
        self,
        input_ids: list[list[int]],
        mask: list[list[int]],
        cache: Any,
        limits: list[int],
        temperature: float,
        seed: int,
    ) -> list[list[int]]:
        """New tokens for each row, picked the way `model.generate` picks them.

        `input_ids` and `mask` cover the whole prompts; `cache` (a `_buffer_cache`) already
        holds the first tokens of every row. Each step feeds one token per row through the
        model's forward, without generate's per-step machinery. Greedy: a row leaves the
        batch once it has produced a stop token or `limits[row]` tokens (its cache rows are
        dropped when a few rows have finished), and the loop ends when every row has.
        Sampling keeps every row to the end, as generate does, so that each row draws the
        same numbers from torch's generator, seeded with `seed`, as it did under generate.
        """
        import torch

        device = self.model.device
        mask_t = torch.tensor(mask, device=device)
        step_ids = torch.tensor(input_ids, device=device)[:, cache.get_seq_length() :]
        if temperature > 0:
            torch.manual_seed(seed)
        onednn = self.onednn and _onednn_available(self.model)
        if onednn:
            _onednn_linears(self.model)
        config = self.model.config
        before = config._attn_implementation
        if cache.prefix_layers is not None:
            _register_prefix_attention()
            config._attn_implementation = PREFIX_ATTENTION
        _prefix_state.layers = cache.prefix_layers
        _linear_state.on = onednn
        try:
            return self._decode_steps(step_ids, mask_t, cache, limits, temperature)
        finally:
            _prefix_state.layers = None
            _linear_state.on = False
            config._attn_implementation = before

    def _decode_steps(
        self, step_ids: Any, mask_t: Any, cache: Any, limits: list[int], temperature: float
    ) -> list[list[int]]:
        import torch

        device = self.model.device
        stop = self._stop_ids()
        pad = int(self.tokenizer.pad_token_id)
        sampling = temperature > 0
        out: list[list[int]] = [[] for _ in limits]
        finished = [False] * len(limits)
        active = list(range(len(limits)))  # the request row of each batch row
        for _ in range(max(limits)):
            logits = last_logits(self.model, step_ids, mask_t, cache)
            if sampling:
                probs = torch.softmax(logits / temperature, dim=-1)
                picked = torch.multinomial(probs, num_samples=1).squeeze(1).tolist()
            else:
                picked = logits.argmax(dim=-1).tolist()
            feed = []
            for row, token in zip(active, picked):
                if not finished[row]:
                    out[row].append(token)
                    # As under generate, a row that reaches its own limit is finished here
                    # (its later tokens would be cut anyway); one that stopped feeds padding.
                    finished[row] = token in stop or len(out[row]) >= limits[row]
                feed.append(pad if token in stop or finished[row] else token)
            if all(finished[row] for row in active):
                break
            done = sum(finished[row] for row in active)
            if not sampling and done >= max(1, len(active) // 8):
                keep = [i for i, row in enumerate(active) if not finished[row]]
                index = torch.tensor(keep, device=device)
                for layer in cache.layers:
                    layer.select_rows(index)
                mask_t = mask_t.index_select(0, index)
                active = [active[i] for i in keep]
                feed = [feed[i] for i in keep]
            step_ids = torch.tensor([[t] for t in feed], device=device)
            mask_t = torch.cat([mask_t, mask_t.new_ones((len(active), 1))], dim=1)
        return out

    def _token_ids(self, request: ChatRequest) -> list[int]:
        # Special-token text inside a message stays text: it cannot open or close a turn.
        return chat_token_ids(self.tokenizer, request.messages)

    def _decode(
        self,
        batch: Sequence[ChatRequest],
        rows: list[list[int]],
        prompt_lens: list[int],
        latency: float,
    ) -> list[ChatResponse]:
        stop = self._stop_ids()
        responses = []
        for row, req, prompt_len in zip(rows, batch, prompt_lens):
            tokens: list[int] = []
            finish = "length"
            for tok in row[: req.max_tokens]:
                if tok in stop:
                    finish = "stop"
                    break
                tokens.append(tok)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            responses.append(
                ChatResponse(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=prompt_len,
                    completion_tokens=len(tokens) + (finish == "stop"),
                    latency_s=latency / len(batch),
                )
            )
        return responses

    def generate_sync(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        ids = [self._token_ids(r) for r in requests]
        shared = _common_prefix_len(ids)
        # Similar lengths batch together, so less goes to padding.
        order = sorted(
            range(len(requests)),
            key=lambda i: (requests[i].temperature, requests[i].sample_index, len(ids[i])),
        )
        results: list[ChatResponse | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            group = [requests[i] for i in idx]
            # One sampling setting per batch: split where temperature or sample differ.
            if len({(r.temperature, r.sample_index) for r in group}) > 1:
                answers = [
                    self._generate_batch([r], [ids[i]], shared)[0] for r, i in zip(group, idx)
                ]
            else:
                answers = self._generate_batch(group, [ids[i] for i in idx], shared)
            for i, answer in zip(idx, answers):
                results[i] = answer
        return [r for r in results if r is not None]

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return await asyncio.to_thread(self.generate_sync, requests)
