import pytest

from potstill.train.batching import SeededLengthGroupedSampler


def test_length_grouped_order_depends_only_on_seed_and_epoch() -> None:
    lengths = [(i * 37) % 101 + 5 for i in range(64)]
    sampler = SeededLengthGroupedSampler(lengths, batch_size=4, seed=7)
    first = list(sampler)
    assert sorted(first) == list(range(64))
    again = SeededLengthGroupedSampler(lengths, batch_size=4, seed=7)
    assert list(again) == first  # a fresh process (a resumed run) sees the same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    again.set_epoch(1)
    assert list(again) == second
    # batches hold rows of similar length: far less spread than random batches of 4
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in _batches(first)]
    assert sum(spread) / len(spread) < 10
    assert max(lengths[i] for i in first[:4]) == max(lengths)  # the longest batch first
    # and the batches themselves come in random order, not longest to shortest
    firsts = [lengths[b[0]] for b in _batches(first)][1:]
    assert firsts != sorted(firsts, reverse=True)


def _batches(order: list[int], size: int = 4) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_a_cpu_trains_padding_free_unless_told_otherwise() -> None:
    import torch

    from potstill.config import TrainConfig
    from potstill.train.stage import attention_for, batching_for

    if torch.cuda.is_available():
        pytest.skip("the CPU default; a GPU keeps transformers' attention")
    default = TrainConfig()
    assert attention_for(default) == "potstill_varlen" and batching_for(default) == "padding_free"
    grouped = TrainConfig(batching="length_grouped")
    assert attention_for(grouped) is None and batching_for(grouped) == "length_grouped"
    chosen = TrainConfig(attn_implementation="eager")
    assert attention_for(chosen) == "eager" and batching_for(chosen) == "length_grouped"
