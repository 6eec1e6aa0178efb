"""Continuous batching for `potstill serve`: requests join the running batch between steps.

transformers 5.24 has a continuous-batching manager (`model.init_continuous_batching`), but
it takes one generation config for every request (no per-request seed, temperature only
through an opt-in processor) and returns only the chosen token's log-probability, never the
top alternatives; a server whose clients each pick their own temperature, seed and
`top_logprobs` needs both. So this is a small scheduler over the model `LocalChatModel`
loads: one thread owns the model; every step it prefills the requests that arrived
(left-padded together), splices their KV cache into the batch's, and decodes one token for
every running request. Finished and cancelled requests leave the batch at once, so a long
request never holds up a short one and a client that goes away stops costing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from potstill.models.local import LocalChatModel, last_logits

# The most alternatives a request may ask for per token (OpenAI's own limit).
MAX_TOP_LOGPROBS = 20


class QueueFull(RuntimeError):
    """The batch and its waiting line are full: the client should retry later (HTTP 429)."""


class EngineStopped(RuntimeError):
    """The scheduler is stopping or stopped."""


@dataclass
class TokenEvent:
    """One generated token for a job, or the end of the job (`finish` set)."""

    token: int | None = None
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None
    finish: str | None = None
    error: str | None = None


@dataclass
class Job:
    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    top_logprobs: int | None = None  # None: no logprobs; 0..20: the chosen token plus so many
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    tokens: list[int] = field(default_factory=list)
    cancelled: bool = False
    generator: Any = None

    def cancel(self) -> None:
        """Stop generating for this job at the next step (the client went away)."""
        self.cancelled = True

    def _emit(self, event: TokenEvent) -> None:
        if self.loop is None:
            self.events.put_nowait(event)
        else:
            # A closed event loop: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class ContinuousBatcher:
    """Runs jobs on a local model, `max_batch` at a time, at most `max_waiting` queued."""

    def __init__(self, model: LocalChatModel, max_batch: int = 32, max_waiting: int = 64) -> None:
        self.local = model
        self.model = model.model
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.stop_ids = sorted(model._stop_ids())
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._joining: list[Job] = []  # taken from the queue, being prefilled
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="potstill-batcher", daemon=True)
        self._cache: Any = None
        self._mask: Any = None  # [rows, cache length]: 1 for a real token, 0 for padding
        self._next: list[int] = []  # per running row, the sampled token not yet in the cache
        self.error: str | None = None

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def start(self) -> ContinuousBatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Fail every queued and running job and end the thread within `timeout` seconds."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def load(self) -> tuple[int, int]:
        """(running, waiting) jobs."""
        with self._wake:
            return len(self._running) + len(self._joining), len(self._waiting)

    def submit(self, job: Job) -> Job:
        if job.loop is None:
            try:
                job.loop = asyncio.get_running_loop()
            except RuntimeError:
                job.loop = None
        with self._wake:
            if self._stopping or not self._thread.is_alive():
                raise EngineStopped(self.error or "the server is shutting down")
            free = self.max_batch - len(self._running) - len(self._joining)
            if len(self._waiting) >= self.max_waiting + max(free, 0):
                raise QueueFull(
                    f"the server is busy ({len(self._running)} running, "
                    f"{len(self._waiting)} waiting); retry later"
                )
            self._waiting.append(job)
            self._wake.notify_all()
        return job

    # -- the scheduler thread ---------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while True:
                    with self._wake:
                        while not self._stopping and not self._waiting and not self._running:
                            self._wake.wait(0.5)
                        if self._stopping:
                            break
                        room = self.max_batch - len(self._running)
                        joining = [
                            self._waiting.popleft() for _ in range(min(room, len(self._waiting)))
                        ]
                    self._joining = [j for j in joining if not self._drop_cancelled(j)]
                    if self._joining:
                        self._prefill(self._joining)
                    self._joining = []
                    if self._running:
                        self._decode()
        except Exception as exc:  # a model error must not leave clients waiting forever
            self.error = f"generation failed: {type(exc).__name__}: {exc}"
        with self._wake:
            self._stopping = True
            jobs = self._joining + self._running + list(self._waiting)
            self._running, self._waiting = [], deque()
        for job in jobs:
            job._emit(TokenEvent(finish="error", error=self.error or "the server is shutting down"))

    def _drop_cancelled(self, job: Job) -> bool:
        if job.cancelled:
            job._emit(TokenEvent(finish="cancelled"))
        return job.cancelled

    def _forward(self, ids: Any, mask: Any, cache: Any) -> Any:
        return last_logits(self.model, ids, mask, cache)

    def _prefill(self, jobs: list[Job]) -> None:
        import torch
        from transformers import DynamicCache

        device = self.model.device
        width = max(len(j.prompt) for j in jobs)
        pad = int(self.local.tokenizer.pad_token_id or 0)
        ids = torch.tensor(
            [[pad] * (width - len(j.prompt)) + j.prompt for j in jobs], device=device
        )
        mask = torch.tensor(
            [[0] * (width - len(j.prompt)) + [1] * len(j.prompt) for j in jobs], device=device
        )
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, cache)
        for job in jobs:
            if job.temperature > 0:
                job.generator = torch.Generator(device=device)
                if job.seed is not None:
                    job.generator.manual_seed(job.seed)
                else:
                    job.generator.seed()
        self._join(cache, mask, jobs)
        self._sample(logits, start=len(self._running) - len(jobs))

    def _join(self, cache: Any, mask: Any, jobs: list[Job]) -> None:
        """Splice a prefilled cache into the batch's, left-padding the shorter one."""
        import torch

        self._running.extend(jobs)
        self._next.extend([-1] * len(jobs))
        if self._cache is None:
            self._cache, self._mask = cache, mask
            return
        old, new = self._mask.shape[1], mask.shape[1]
        width = max(old, new)

        def left_pad(t: Any, length: int, dim: int) -> Any:
            if length == width:
                return t
            shape = list(t.shape)
            shape[dim] = width - length
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([left_pad(mine.keys, old, 2), left_pad(theirs.keys, new, 2)])
            mine.values = torch.cat(
                [left_pad(mine.values, old, 2), left_pad(theirs.values, new, 2)]
            )
        self._mask = torch.cat([left_pad(self._mask, old, 1), left_pad(mask, new, 1)])

    def _decode(self) -> None:
        import torch

        device = self.model.device
        ids = torch.tensor([[t] for t in self._next], device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._next), 1))], dim=1)
        logits = self._forward(ids, self._mask, self._cache)
        self._sample(logits, start=0)

    def _sample(self, logits: Any, start: int) -> None:
        """Pick the next token of running rows start.. from their logits; retire finished rows."""
        import torch

        logprobs = None
        rows = self._running[start:]
        if any(j.top_logprobs is not None for j in rows):
            logprobs = torch.log_softmax(logits, dim=-1)
        greedy = logits.argmax(dim=-1).tolist()
        for offset, job in enumerate(rows):
            if job.temperature > 0:
                probs = torch.softmax(logits[offset] / job.temperature, dim=-1)
                if job.top_p < 1.0:
                    probs = _nucleus(probs, job.top_p)
                token = int(torch.multinomial(probs, 1, generator=job.generator).item())
            else:
                token = int(greedy[offset])
            event = TokenEvent(token=token)
            if job.top_logprobs is not None and logprobs is not None:
                row = logprobs[offset]
                event.logprob = _finite(float(row[token]))
                if job.top_logprobs:
                    values, indices = row.topk(job.top_logprobs)
                    event.top = [
                        (int(i), _finite(float(v)))
                        for i, v in zip(indices.tolist(), values.tolist())
                    ]
            self._next[start + offset] = token
            if token in self.stop_ids:
                event.finish = "stop"
            else:
                job.tokens.append(token)
                if len(job.tokens) >= job.max_tokens:
                    event.finish = "length"
            if job.cancelled:
                event.finish = "cancelled"
            job._emit(event)
        self._retire()

    def _retire(self) -> None:
        """Drop the rows of finished and cancelled jobs, and padding no row needs any more."""
        import torch

        done = [
            i
            for i, job in enumerate(self._running)
            if job.cancelled or len(job.tokens) >= job.max_tokens or self._next[i] in self.stop_ids
        ]
        if not done:
            return
        keep = [i for i in range(len(self._running)) if i not in set(done)]
        self._running = [self._running[i] for i in keep]
        self._next = [self._next[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        # Columns that are padding in every remaining row are dropped.
        first = int((mask.sum(0) > 0).nonzero()[0].item())
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]


def _finite(value: float) -> float:
    """A log-probability JSON can carry: -inf (a token the model rules out) becomes -9999."""
    return value if math.isfinite(value) else -9999.0


def _nucleus(probs: Any, top_p: float) -> Any:
    """Keep the most likely tokens whose probabilities sum to `top_p` (at least one)."""
    import torch

    ordered, order = probs.sort(descending=True)
    drop = ordered.cumsum(-1) - ordered > top_p
    ordered[drop] = 0.0
    return torch.zeros_like(probs).scatter(-1, order, ordered)
