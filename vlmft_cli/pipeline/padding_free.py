"""Padding-free stage-2 micro-batches: the micro-batch's conversations back to back in one row.

Each conversation is its own causal document with positions from 0 (`vlmft_cli.attention_masks`), so it
is computed exactly as alone and no token is padding. Only where FlexAttention runs it: its `BlockMask`
skips the tiles between documents, while a dense mask over the row would cost (Σ T)² for sdpa. The model
backend must offer `collate_padding_free(samples, pad_token_id, attn_implementation, dtype)` (InternVL3
does; Qwen's 3-D rope positions come from the whole row and would not restart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlmft_cli.attention_masks import FLEX_ATTENTION
from vlmft_cli.pipeline.dataset import SKIPPED_KEY, placeholder_batch, split_skipped


def padding_free(stage: int, micro_batch_size: int, backend: Any, attention: Any) -> bool:
    """Whether stage-`stage` training with this micro-batch, model and attention backend runs padding-free."""
    return (
        stage == 2
        and micro_batch_size > 1
        and getattr(attention, "attn_implementation", None) == FLEX_ATTENTION
        and callable(getattr(backend, "collate_padding_free", None))
    )


class PaddingFreeCollator:
    """One padding-free row per micro-batch through the backend, with its token and sample counts (the
    trainer's `STAT_KEYS`: `num_qas` counts conversations here); `Skipped` items are dropped and listed as
    `Collator` does. Picklable, for worker processes."""

    def __init__(self, backend: Any, pad_token_id: int, attn_implementation: str, dtype: torch.dtype) -> None:
        self.backend = backend
        self.pad_token_id = pad_token_id
        self.attn_implementation = attn_implementation
        self.dtype = dtype

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        kept, skipped = split_skipped(samples)
        if not kept:
            return placeholder_batch(self.pad_token_id, skipped)
        batch: dict[str, Any] = self.backend.collate_padding_free(kept, self.pad_token_id, self.attn_implementation, self.dtype)
        batch["num_tokens"] = torch.tensor(sum(len(sample) for sample in kept))
        batch["num_qas"] = torch.tensor(len(kept))
        if skipped:
            batch[SKIPPED_KEY] = skipped
        return batch
