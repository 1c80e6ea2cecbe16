"""Attention masks from per-token ids, as a FlexAttention `BlockMask` built on the batch's own device.

A batch for `flex_attention` carries no dense (B, 1, T, T) mask. Its collate writes, under
`MASK_IDS_KEY`, a small (B, 2, T) integer tensor: for every token its *document* (row 0; a stretch of
the row that sees nothing outside itself, -1 for padding) and its *block* within the document (row 1;
0 = the document's shared prefix, k >= 1 = block k). The rule: a token attends causally to the earlier
tokens of its document that are in the prefix or in its own block. Shared-prefix packing is one document
per row, `[prefix][QA 1][QA 2]…`; padding-free rows are several documents of one block each (all 0).
Padding attends causally to the padding before it, so no row is fully masked.

Once the batch is on its device, `with_block_mask` swaps the ids for the `BlockMask` (the trainer's
`_prepare_inputs`, evaluation and the packing benchmark call it); FlexAttention then skips every tile
the rule masks out. Building it costs O(T) Python per row and one compiled pass on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import torch

#: The batch key of the (B, 2, T) document/block ids that `with_block_mask` turns into a `BlockMask`.
MASK_IDS_KEY = "mask_ids"
#: transformers' name of the attention implementation these masks are for.
FLEX_ATTENTION = "flex_attention"

#: One document of a row: (prefix length, block lengths). A plain causal document is (length, ()).
Document = tuple[int, Sequence[int]]


def document_ids(rows: Sequence[Sequence[Document]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, 2, T) document/block ids, (B, T) position ids) for right-padded rows of `length` tokens.

    Positions count from 0 in every document's prefix and restart after it in each block, so a block is
    computed as if it followed its prefix alone; padding gets position 0."""
    ids = torch.zeros((len(rows), 2, length), dtype=torch.int32)
    ids[:, 0] = -1
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    for row, documents in enumerate(rows):
        start = 0
        for number, (prefix_length, block_lengths) in enumerate(documents):
            if prefix_length < 0 or any(size <= 0 for size in block_lengths):
                raise ValueError(f"row {row}, document {number}: the prefix length must be >= 0 and every block length > 0")
            sizes = torch.tensor([prefix_length, *block_lengths], dtype=torch.long)
            end = start + int(sizes.sum())
            if end > length:
                raise ValueError(f"row {row} holds {end}+ tokens, more than the padded length {length}")
            ids[row, 0, start:end] = number
            ids[row, 1, start:end] = torch.repeat_interleave(torch.arange(len(sizes), dtype=torch.int32), sizes)
            offsets = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)  # where each piece starts
            within = torch.arange(end - start) - offsets
            positions[row, start:end] = within + torch.where(offsets > 0, prefix_length, 0)
            start = end
    return ids, positions


def shared_prefix_mask_mod(ids: torch.Tensor) -> Any:
    """The FlexAttention `mask_mod` of the rule above over (B, 2, T) ids."""
    document, block = ids[:, 0], ids[:, 1]

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        same_document = document[b, q] == document[b, kv]
        visible = (block[b, kv] == 0) | (block[b, kv] == block[b, q])
        return (kv <= q) & same_document & visible

    return mask_mod


@cache
def _compiled_create_block_mask() -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)


def block_mask(ids: torch.Tensor) -> Any:
    """The `BlockMask` of (B, 2, T) ids, on their device (one mask for every head). On CUDA the builder is
    compiled, so nothing of size T² is materialised (a padding-free row can hold 32k tokens); elsewhere it
    runs eagerly, vectorised over the T² pairs."""
    from torch.nn.attention.flex_attention import create_block_mask

    build = _compiled_create_block_mask() if ids.device.type == "cuda" else create_block_mask
    batch, _, length = ids.shape
    return build(shared_prefix_mask_mod(ids), batch, None, length, length, device=ids.device)


def with_block_mask(batch: dict[str, Any]) -> dict[str, Any]:
    """`batch` with its `MASK_IDS_KEY` ids replaced by the `BlockMask` as its `attention_mask` (batches
    without ids are returned as they are). Call it after the batch is moved to the model's device."""
    ids = batch.pop(MASK_IDS_KEY, None)
    if ids is not None:
        batch["attention_mask"] = block_mask(ids)
    return batch


def dense_allowed(ids: torch.Tensor) -> torch.Tensor:
    """The (B, 1, T, T) boolean "may attend" matrix of the same rule, for sdpa/eager and for checks."""
    length = ids.shape[-1]
    q = torch.arange(length)[:, None]
    kv = torch.arange(length)[None, :]
    document, block = ids[:, 0, :, None], ids[:, 1, :, None]
    same_document = document == document.transpose(1, 2)
    visible = (block.transpose(1, 2) == 0) | (block == block.transpose(1, 2))
    return ((kv <= q) & same_document & visible)[:, None]


def dense_mask(ids: torch.Tensor, attn_implementation: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`dense_allowed` of (B, 2, T) ids as `attn_implementation` takes a caller-built mask (`as_dense_mask`)."""
    return as_dense_mask(dense_allowed(ids), attn_implementation, dtype)


def as_dense_mask(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A boolean "may attend" matrix as `attn_implementation` takes it: as is (True = attend) for sdpa,
    additive in `dtype` (0 / dtype min) for eager."""
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(f"attention {attn_implementation!r} takes no dense mask (use sdpa or eager)")
