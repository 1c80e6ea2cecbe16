"""Shared-prefix block attention masks for packing several QA blocks after one set of frames.

Layout `[prefix][block 1][block 2]…`: the prefix (system turn and frames) is causal; each block sees the
whole prefix and itself causally, never another block; positions restart after the prefix in every
block, so block k is computed exactly as if it followed the prefix alone. InternVL3's Qwen2 language
model in transformers 5.x honours such a caller-built 4-D mask (batch, 1, T, T) with explicit
`position_ids`: boolean (True = attend) with `sdpa`, additive float (0 / dtype min) with `eager`.
Flash-attention kernels take no arbitrary mask, so other implementations are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Attention implementations verified to honour a 4-D block mask with this model family.
BLOCK_MASK_IMPLEMENTATIONS: frozenset[str] = frozenset({"sdpa", "eager"})


def supports_block_mask(attn_implementation: str) -> bool:
    """Whether a caller-built 4-D block mask is honoured under `attn_implementation`."""
    return attn_implementation in BLOCK_MASK_IMPLEMENTATIONS


def _allowed_and_positions(prefix_length: int, block_lengths: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """(T, T) boolean "may attend" matrix and the position ids of one packed row."""
    if prefix_length < 0 or any(length <= 0 for length in block_lengths):
        raise ValueError("the prefix length must be >= 0 and every block length > 0")
    total = prefix_length + sum(block_lengths)
    allowed = torch.zeros((total, total), dtype=torch.bool)
    allowed[:prefix_length, :prefix_length] = torch.ones((prefix_length, prefix_length), dtype=torch.bool).tril()
    positions = list(range(prefix_length))
    start = prefix_length
    for length in block_lengths:
        end = start + length
        allowed[start:end, :prefix_length] = True
        allowed[start:end, start:end] = torch.ones((length, length), dtype=torch.bool).tril()
        positions += range(prefix_length, prefix_length + length)
        start = end
    return allowed, positions


def _as_implementation(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The boolean matrix as `attn_implementation` takes it: as is for sdpa, additive for eager."""
    if not supports_block_mask(attn_implementation):
        raise ValueError(f"attention {attn_implementation!r} does not honour a block mask (use sdpa or eager)")
    if attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def shared_prefix_block_mask(
    prefix_length: int,
    block_lengths: Sequence[int],
    attn_implementation: str,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention_mask of shape (1, 1, T, T), position_ids of shape (1, T)) for one packed row.

    The mask is boolean for `sdpa` and additive in `dtype` for `eager` (the model's compute dtype).
    """
    allowed, positions = _allowed_and_positions(prefix_length, block_lengths)
    position_ids = torch.tensor(positions, dtype=torch.long).unsqueeze(0)
    return _as_implementation(allowed, attn_implementation, dtype)[None, None], position_ids


def batch_block_mask(
    layouts: Sequence[tuple[int, Sequence[int]]],
    length: int,
    attn_implementation: str,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention_mask (B, 1, T, T), position_ids (B, T)) for right-padded packed rows.

    `layouts` holds each row's (prefix_length, block_lengths); `length` is the padded T. A padding
    position attends to itself only: a row of the mask with nothing allowed would make sdpa return NaN.
    """
    allowed = torch.eye(length, dtype=torch.bool).repeat(len(layouts), 1, 1)
    position_ids = torch.zeros((len(layouts), length), dtype=torch.long)
    for row, (prefix_length, block_lengths) in enumerate(layouts):
        row_allowed, positions = _allowed_and_positions(prefix_length, block_lengths)
        size = len(positions)
        if size > length:
            raise ValueError(f"row {row} holds {size} tokens, more than the padded length {length}")
        allowed[row, :size, :size] = row_allowed
        position_ids[row, :size] = torch.tensor(positions, dtype=torch.long)
    return _as_implementation(allowed, attn_implementation, dtype)[:, None], position_ids
