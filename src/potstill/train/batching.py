"""Batches of rows of similar length, in an order fixed by the seed and the epoch.

Imports torch only (no TRL, no potstill config), so the GPU benchmark can use it as it is.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int = 0, mega: int = 50
) -> list[list[int]]:
    """Rows shuffled, cut into mega-batches of `mega` batches, sorted by length inside each, cut
    into batches; the batches shuffled, the one holding the longest row first (an
    out-of-memory error shows at once)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = batch_size * mega
    found: list[list[int]] = []
    for start in range(0, len(order), size):
        group = sorted(order[start : start + size], key=lambda i: -lengths[i])
        found += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    if not found:
        return []
    shuffled = [found[i] for i in torch.randperm(len(found), generator=generator).tolist()]
    longest = max(range(len(shuffled)), key=lambda b: max(lengths[i] for i in shuffled[b]))
    shuffled.insert(0, shuffled.pop(longest))
    return shuffled


class SeededLengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Length-grouped batches (little padding) in random order, as a sampler whose order depends
    only on the seed and the epoch. transformers' LengthGroupedSampler draws from the global
    RNG, whose state a resumed run does not share, and sorts a small data set into hardly any
    groups at all."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, mega: int = 50) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        batches = length_grouped_batches(
            self.lengths, self.batch_size, self.seed, self.epoch, self.mega
        )
        return iter([i for batch in batches for i in batch])
