"""Shared-prefix block attention masks for packing several QA blocks after one set of frames.

Layout `[prefix][block 1][block 2]…`: the prefix (system turn and frames) is causal; each block sees the
whole prefix and itself causally, never another block; positions restart after the prefix in every
block, so block k is computed exactly as if it followed the prefix alone. InternVL3's Qwen2 language
model in transformers 5.x honours such a caller-built 4-D mask (batch, 1, T, T) with explicit
`position_ids`: boolean (True = attend) with `sdpa`, additive float (0 / dtype min) with `eager`, and a
FlexAttention `BlockMask` with `flex_attention`, for which a batch carries only per-token document/block
ids (`vlmft_cli.attention_masks`) and the mask is built on the device. Flash-attention kernels take no
arbitrary mask, so other implementations are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlmft_cli.attention_masks import FLEX_ATTENTION, MASK_IDS_KEY, Document, as_dense_mask, dense_allowed, document_ids

#: Attention implementations verified to honour a 4-D block mask with this model family.
BLOCK_MASK_IMPLEMENTATIONS: frozenset[str] = frozenset({"sdpa", "eager", FLEX_ATTENTION})


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
        raise ValueError(f"attention {attn_implementation!r} does not honour a block mask (use sdpa, eager or flex_attention)")
    if attn_implementation == FLEX_ATTENTION:
        raise ValueError("flex_attention takes document/block ids, not a dense mask: use batch_mask_inputs")
    return as_dense_mask(allowed, attn_implementation, dtype)


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


def batch_mask_inputs(
    layouts: Sequence[tuple[int, Sequence[int]]],
    length: int,
    attn_implementation: str,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """The mask inputs of right-padded packed rows for `attn_implementation`: `position_ids` and either the
    dense `attention_mask` of `batch_block_mask` or, for flex_attention, the (B, 2, T) ids under
    `MASK_IDS_KEY` that `vlmft_cli.attention_masks.with_block_mask` turns into a `BlockMask`."""
    if attn_implementation == FLEX_ATTENTION:
        ids, position_ids = document_ids([[layout] for layout in layouts], length)
        return {MASK_IDS_KEY: ids, "position_ids": position_ids}
    mask, position_ids = batch_block_mask(layouts, length, attn_implementation, dtype)
    return {"attention_mask": mask, "position_ids": position_ids}


def documents_mask_inputs(
    rows: Sequence[Sequence[Document]], length: int, attn_implementation: str, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Like `batch_mask_inputs` for rows of several documents each (padding-free rows): every document
    attends to itself only, positions restart in each; dense for sdpa/eager, ids for flex_attention."""
    ids, position_ids = document_ids(rows, length)
    if attn_implementation == FLEX_ATTENTION:
        return {MASK_IDS_KEY: ids, "position_ids": position_ids}
    return {"attention_mask": _as_implementation(dense_allowed(ids), attn_implementation, dtype), "position_ids": position_ids}
