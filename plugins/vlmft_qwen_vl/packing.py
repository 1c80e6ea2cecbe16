"""Shared-prefix packing for Qwen2.5-VL and Qwen3-VL: `[prefix][QA 1][QA 2]…` with 3-D rope positions.

A stage-1 sample renders as `[<|im_start|>system\\n…<|im_end|>\\n]<|im_start|>user\\n{video}` (the prefix:
the system turn and the expanded video, Qwen3-VL's per-chunk timestamps included) followed by
`{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>\\n` (the QA block). Text between special
tokens is tokenized piece by piece, so a block tokenizes exactly as in its unpacked sample, and the packed
sequence is the prefix once followed by every block.

Positions: Qwen's multimodal rope gives every token (temporal, height, width) ids; the video's follow its
grid (and Qwen2.5-VL's temporal spacing), the text after it continues from them. Each block gets exactly
the ids it has in its unpacked sample `[prefix][QA k]`, computed by the model class's own `get_rope_index`
from the checkpoint's config (no weights needed) and placed after the prefix, whose ids stay those of the
video. `collate_packed` passes them as `position_ids` of shape (3, B, T), the shape the model builds for
itself (a 4th row of text-only ids would only serve transformers' mask-from-positions detection and
flash-attention, neither used with a caller-built mask), next to the (B, 1, T, T) block mask: each block
sees the prefix and itself causally, padding sees the padding before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from PIL.Image import Image

from vlmft_cli.attention_masks import dense_mask, document_ids
from vlmft_cli.chat_pieces import Piece, qa_pairs, split_shared_prefix, tokenize_pieces
from vlmft_cli.model_backend import EncodedSample, PackedLayout, Turn
from vlmft_qwen_vl.encoding import conversation_pieces, resolve_fps, video_sample
from vlmft_qwen_vl.processor import QwenVLProcessor

#: Attention implementations whose Qwen VL language model honours a caller-built (B, 1, T, T) mask with
#: explicit position ids: boolean (True = attend) for sdpa, additive (0 / dtype min) for eager.
BLOCK_MASK_IMPLEMENTATIONS: frozenset[str] = frozenset({"sdpa", "eager"})

#: The `extra` key of a packed sample's (3, T) rope positions; `collate_packed` turns it into `position_ids`.
POSITIONS_KEY = "packed_position_ids"


def supports_block_mask(attn_implementation: str) -> bool:
    return attn_implementation in BLOCK_MASK_IMPLEMENTATIONS


# --- the sequence --------------------------------------------------------------------------------------


def prefix_end(processor: QwenVLProcessor, pieces: Sequence[Piece], n_frames: int) -> int:
    """Index of the first piece of the QA block in a one-QA conversation's pieces: after the last video
    piece (`<|vision_start|>…<|vision_end|>`), or, without frames, after the `<|im_start|>` of the user turn."""
    if n_frames > 0:
        return 1 + max(i for i, piece in enumerate(pieces) if piece.ids[:1] == (processor.vision_start_id,))
    return next(i for i, piece in enumerate(pieces) if piece.text is not None and piece.text.startswith("user\n"))


def split_pieces(
    processor: QwenVLProcessor, n_frames: int, qas: Sequence[tuple[Turn, Turn]], fps: float
) -> tuple[list[Piece], list[list[Piece]]]:
    """(the shared prefix's pieces, each QA block's pieces with its answer renumbered to the block index)."""
    conversations = [conversation_pieces(processor, n_frames, [user, assistant], fps=fps, generation_prompt=False) for user, assistant in qas]
    return split_shared_prefix(conversations, lambda pieces: prefix_end(processor, pieces, n_frames))


def packed_prefix_length(processor: QwenVLProcessor, n_frames: int, fps: float | None = None) -> int:
    """Tokens of the shared prefix for `n_frames` frames at `fps` (Qwen3-VL's timestamps are text, so the
    rate can change the count; None = the processor's default, as in `encode`)."""
    prefix, _ = split_pieces(processor, n_frames, [(Turn("user", "?"), Turn("assistant", "."))], resolve_fps(processor, fps))
    return len(tokenize_pieces(processor.tokenizer, prefix).input_ids)


def encode_packed(processor: QwenVLProcessor, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None) -> EncodedSample:
    """Frames once, then every (user, assistant) pair of `turns` as a block; labels on each answer and its
    `<|im_end|>`, one answer span per block, and the (3, T) rope positions under `POSITIONS_KEY`."""
    rate = resolve_fps(processor, fps)
    prefix, blocks = split_pieces(processor, len(frames), qa_pairs(turns), rate)
    tokenized = tokenize_pieces(processor.tokenizer, prefix + [piece for block in blocks for piece in block])
    prefix_length = len(tokenize_pieces(processor.tokenizer, prefix).input_ids)
    starts = [prefix_length, *tokenized.qa_ends[:-1]]
    sample = video_sample(processor, frames, tokenized.input_ids, tokenized.labels, tokenized.answer_spans, fps=rate)
    sample.packed = PackedLayout(
        prefix_length=prefix_length,
        block_lengths=tuple(end - start for start, end in zip(starts, tokenized.qa_ends, strict=True)),
    )
    sample.extra[POSITIONS_KEY] = packed_positions(processor, sample)
    return sample


# --- positions -----------------------------------------------------------------------------------------


class _RopeIndexer:
    """The model class's own `get_rope_index`, without building the model: it reads only `config` and
    the class's `get_vision_position_ids`."""

    def __init__(self, model_class: type, config: Any) -> None:
        self.config = config
        self._model_class = model_class

    def get_vision_position_ids(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._model_class.get_vision_position_ids(self, *args, **kwargs)

    def __call__(self, input_ids: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        """(3, L) positions of one unpadded sequence with the video inputs in `extra`."""
        kwargs = {key: extra[key].clone() for key in ("video_grid_thw", "second_per_grid_ts") if key in extra}
        positions, _ = self._model_class.get_rope_index(
            self, input_ids[None], mm_token_type_ids=extra["mm_token_type_ids"][None], **kwargs
        )
        return positions[:, 0]


def rope_indexer(processor: QwenVLProcessor) -> _RopeIndexer:
    config = processor.model_config
    if config is None:
        raise ValueError(
            f"shared-prefix packing needs the {processor.family.display} checkpoint's config.json for its rope "
            "positions; this processor was loaded from a folder without one"
        )
    from transformers import Qwen2_5_VLModel, Qwen3VLModel

    classes = {"qwen2_5_vl": Qwen2_5_VLModel, "qwen3_vl": Qwen3VLModel}
    return _RopeIndexer(classes[config.model_type], config)


def packed_positions(processor: QwenVLProcessor, sample: EncodedSample) -> torch.Tensor:
    """(3, T) rope positions of a packed sample: the prefix's, then each block's as in `[prefix][block]`."""
    assert sample.packed is not None
    index = rope_indexer(processor)
    prefix = sample.packed.prefix_length
    token_types = sample.extra["mm_token_type_ids"]
    positions = torch.empty((3, len(sample)), dtype=torch.long)
    start = prefix
    for length in sample.packed.block_lengths:
        end = start + length
        keep = torch.cat([torch.arange(prefix), torch.arange(start, end)])
        alone = index(sample.input_ids[keep], {**sample.extra, "mm_token_type_ids": token_types[keep]})
        positions[:, :prefix] = alone[:, :prefix]  # the same for every block: the rope index runs left to right
        positions[:, start:end] = alone[:, prefix:]
        start = end
    return positions


# --- the batch -----------------------------------------------------------------------------------------


def block_mask(layouts: Sequence[PackedLayout], length: int, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, T, T) mask of right-padded packed rows (`vlmft_cli.attention_masks.dense_mask`): the prefix
    causal, each block the whole prefix and itself causally; padding attends causally to the padding before
    it (a row with nothing allowed makes sdpa NaN). Boolean (True = attend) for sdpa, additive in `dtype`
    for eager."""
    if not supports_block_mask(attn_implementation):
        raise ValueError(f"attention {attn_implementation!r} does not honour a block mask (use sdpa or eager)")
    ids, _ = document_ids([[(layout.prefix_length, layout.block_lengths)] for layout in layouts], length)
    return dense_mask(ids, attn_implementation, dtype)


def collate_packed(samples: Sequence[EncodedSample], pad_token_id: int, attn_implementation: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`collate`, with the (B, T) padding mask replaced by the block mask and the packed rope positions
    as (3, B, T) `position_ids` (0 on padding)."""
    from vlmft_cli.chat_pieces import collate

    layouts: list[PackedLayout] = []
    for sample in samples:
        if sample.packed is None or POSITIONS_KEY not in sample.extra:
            raise ValueError("collate_packed needs samples from encode_packed")
        layouts.append(sample.packed)
    plain = [replace(sample, extra={k: v for k, v in sample.extra.items() if k != POSITIONS_KEY}) for sample in samples]
    batch = collate(plain, pad_token_id)
    length = batch["input_ids"].shape[1]
    positions = torch.zeros((3, len(samples), length), dtype=torch.long)
    for row, sample in enumerate(samples):
        positions[:, row, : len(sample)] = sample.extra[POSITIONS_KEY]
    batch["attention_mask"] = block_mask(layouts, length, attn_implementation, dtype)
    batch["position_ids"] = positions
    return batch
