"""The torch side of stage-1 packing: a batch sampler that replays the packed batch plan, a dataset that
encodes one packed sequence (frames read once for all its QAs) and the collator that adds the block mask.

The sampler yields micro-batches of packed sequences, each a tuple of QA indices; the dataset is indexed
by such tuples. Skipping batches on resume iterates the plan only: no frame is read. A sequence whose
frames do not decode is `Skipped` (with `skip_bad`) as a whole: its QAs share those frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from vlmft_cli.model_backend import EncodedSample, SharedPrefixPacking
from vlmft_cli.pipeline.dataset import (
    SKIPPED_KEY,
    FrameError,
    Skipped,
    bad_sample,
    load_frames,
    placeholder_batch,
    split_skipped,
)
from vlmft_cli.pipeline.examples import Example
from vlmft_cli.pipeline.packing import MicroBatch, PackedSequence, PackingData, micro_batches_per_epoch, plan_epoch

#: Batch entries for the trainer's counters (tokens and QAs of the micro-batch), not for the model.
STAT_KEYS = ("num_tokens", "num_qas")


class PackedBatchSampler(torch.utils.data.Sampler[MicroBatch]):
    """The micro-batches of one epoch in plan order (all devices' together: accelerate shards them)."""

    def __init__(self, data: PackingData, *, seed: int, global_batch_size: int, accumulation: int, world_size: int = 1) -> None:
        self.data = data
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.accumulation = accumulation
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def per_step(self) -> int:
        return self.accumulation * self.world_size

    def plan(self) -> list[list[MicroBatch]]:
        return plan_epoch(self.data, seed=self.seed, epoch=self.epoch, global_batch_size=self.global_batch_size, per_step=self.per_step, world_size=self.world_size)

    def __len__(self) -> int:
        return micro_batches_per_epoch(self.data.num_qas, self.global_batch_size, self.per_step, self.world_size)

    def __iter__(self) -> Iterator[MicroBatch]:
        for step in self.plan():
            yield from step


class PackedDataset(torch.utils.data.Dataset):
    """Packed sequences of stage-1 examples, fetched by the tuple of example indices they hold.

    Its length is the number of QAs (what an epoch trains), not of sequences, which the plan decides.
    """

    def __init__(self, examples: Sequence[Example], root: Path, backend: SharedPrefixPacking, processor: Any, data: PackingData, *, skip_bad: bool = False, source: str | None = None) -> None:
        self.examples = list(examples)
        self.root = root
        self.backend = backend
        self.processor = processor
        self.data = data
        self.skip_bad = skip_bad
        self.source = source

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, sequence: PackedSequence) -> EncodedSample | Skipped:
        group = self.data.group_of[sequence[0]]
        if any(self.data.group_of[qa] != group for qa in sequence):
            raise ValueError(f"a packed sequence mixes videos: {sequence}")
        first = self.examples[sequence[0]]
        try:
            frames = load_frames(self.root, first.images)
        except FrameError as exc:
            if not self.skip_bad:
                raise
            return Skipped(tuple(bad_sample(self.examples[qa], exc, self.source) for qa in sequence))
        turns = [turn for qa in sequence for turn in self.examples[qa].turns]
        encoded = self.backend.encode_packed(self.processor, frames, turns, fps=first.fps)
        expected = (self.data.prefix_lengths[group], tuple(self.data.block_lengths[qa] for qa in sequence))
        layout = encoded.packed
        if layout is None or (layout.prefix_length, layout.block_lengths) != expected:
            # The plan (max_length, tokens per step) relies on exact lengths, as the unpacked length policy does.
            got = None if layout is None else (layout.prefix_length, layout.block_lengths)
            raise RuntimeError(f"{first.id}: packed layout {got}, the plan expected {expected}")
        return encoded


class PackedCollator:
    """Pads packed sequences through the backend with the block mask for this attention implementation
    and dtype, and adds the micro-batch's token and QA counts (picklable, for worker processes).
    `Skipped` items are dropped and listed as `Collator` does."""

    def __init__(self, backend: SharedPrefixPacking, pad_token_id: int, attn_implementation: str, dtype: torch.dtype) -> None:
        self.backend = backend
        self.pad_token_id = pad_token_id
        self.attn_implementation = attn_implementation
        self.dtype = dtype

    def __call__(self, samples: Sequence[EncodedSample | Skipped]) -> dict[str, Any]:
        kept, skipped = split_skipped(samples)
        if not kept:
            return {**placeholder_batch(self.pad_token_id, skipped), "num_tokens": torch.tensor(0), "num_qas": torch.tensor(0)}
        batch: dict[str, Any] = self.backend.collate_packed(kept, self.pad_token_id, self.attn_implementation, self.dtype)
        batch["num_tokens"] = torch.tensor(sum(len(sample) for sample in kept))
        batch["num_qas"] = torch.tensor(sum(len(sample.answer_spans) for sample in kept))
        if skipped:
            batch[SKIPPED_KEY] = skipped
        return batch
