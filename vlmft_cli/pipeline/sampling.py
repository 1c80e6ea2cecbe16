"""The training order: shuffled by a seed and the epoch alone (so a resumed run replays the same order
without reading data), optionally grouped by length to keep padding low."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices


class SeededOrderSampler(torch.utils.data.Sampler[int]):
    """Indices for one epoch, a pure function of (seed, epoch, lengths).

    With `group_size`, indices come in length-grouped runs of that many samples (transformers'
    megabatch grouping: shuffled, then sorted by length inside blocks of 50 groups, longest first).
    """

    def __init__(self, lengths: Sequence[int], seed: int, group_size: int | None = None) -> None:
        self.lengths = list(lengths)
        self.seed = seed
        self.group_size = group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        if self.group_size and self.group_size > 1 and len(self.lengths) > 1:
            return list(get_length_grouped_indices(self.lengths, self.group_size, generator=generator))
        return torch.randperm(len(self.lengths), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())


def padding_share(lengths: Sequence[int], order: Sequence[int], micro_batch_size: int) -> float:
    """Share of padding tokens when `order` is cut into micro-batches padded to their longest sample."""
    padded = real = 0
    for start in range(0, len(order), micro_batch_size):
        batch = [lengths[i] for i in order[start : start + micro_batch_size]]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 0.0 if padded == 0 else 1.0 - real / padded
