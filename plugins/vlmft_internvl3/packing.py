"""Shared-prefix packing for InternVL3: one sequence per set of frames, `[prefix][QA 1][QA 2]…`.

A stage-1 sample renders as `<|im_start|>user\\nFrame1: <img>…</img>\\nFrame2: …</img>` (the prefix, with
the system turn before it when there is one) followed by `\\n{question}<|im_end|>\\n<|im_start|>assistant\\n
{answer}<|im_end|>\\n` (the QA block). The text between special tokens is tokenized piece by piece, so a
block tokenizes exactly as in its unpacked sample, and the packed sequence is the prefix once followed
by every block. `collate_packed` adds the block mask (for flex_attention, the ids it is built from on the
device) and the position ids that restart after the prefix, so each block is computed as if it followed
the prefix alone. `collate_padding_free` puts a micro-batch of whole conversations (stage 2) into one
row with no padding, each conversation its own causal document.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL.Image import Image

from vlmft_cli.chat_pieces import qa_pairs, split_shared_prefix
from vlmft_cli.model_backend import EncodedSample, PackedLayout, Turn
from vlmft_internvl3.block_mask import batch_mask_inputs, documents_mask_inputs
from vlmft_internvl3.encoding import (
    Piece,
    collate,
    conversation_pieces,
    pixel_values,
    tokenize_pieces,
    tokens_per_frame,
)
from vlmft_internvl3.processor import InternVL3Processor


def prefix_end(processor: InternVL3Processor, pieces: Sequence[Piece], n_frames: int) -> int:
    """Index of the first piece of the QA block in a one-QA conversation's pieces: after the last image
    block, or, without frames, after the `<|im_start|>` that opens the user turn."""
    if n_frames > 0:
        last_image = max(i for i, piece in enumerate(pieces) if piece.ids[:1] == (processor.image_start_id,))
        return last_image + 1
    return next(i for i, piece in enumerate(pieces) if piece.text is not None and piece.text.startswith("user\n"))


def split_pieces(
    processor: InternVL3Processor, n_frames: int, qas: Sequence[tuple[Turn, Turn]]
) -> tuple[list[Piece], list[list[Piece]]]:
    """(the shared prefix's pieces, each QA block's pieces with its answer renumbered to the block index)."""
    conversations = [conversation_pieces(processor, n_frames, [user, assistant], generation_prompt=False) for user, assistant in qas]
    return split_shared_prefix(conversations, lambda pieces: prefix_end(processor, pieces, n_frames))


def packed_prefix_length(processor: InternVL3Processor, n_frames: int) -> int:
    """Tokens of the shared prefix for `n_frames` frames (the question text does not reach it)."""
    prefix, _ = split_pieces(processor, n_frames, [(Turn("user", "?"), Turn("assistant", "."))])
    return len(tokenize_pieces(processor, prefix).input_ids)


def encode_packed(processor: InternVL3Processor, frames: Sequence[Image], turns: Sequence[Turn]) -> EncodedSample:
    """Frames once, then every (user, assistant) pair of `turns` as a block; labels on each answer and its
    `<|im_end|>`, one answer span per block."""
    prefix, blocks = split_pieces(processor, len(frames), qa_pairs(turns))
    tokenized = tokenize_pieces(processor, prefix + [piece for block in blocks for piece in block])
    prefix_length = len(tokenize_pieces(processor, prefix).input_ids)
    starts = [prefix_length, *tokenized.qa_ends[:-1]]
    return EncodedSample(
        input_ids=torch.tensor(tokenized.input_ids, dtype=torch.long),
        labels=torch.tensor(tokenized.labels, dtype=torch.long),
        pixel_values=pixel_values(processor, frames),
        num_image_tokens=len(frames) * tokens_per_frame(processor),
        answer_spans=tokenized.answer_spans,
        packed=PackedLayout(
            prefix_length, tuple(end - start for start, end in zip(starts, tokenized.qa_ends, strict=True))
        ),
    )


def collate_packed(
    samples: Sequence[EncodedSample], pad_token_id: int, attn_implementation: str, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """`collate`, with the (B, T) padding mask replaced by the (B, 1, T, T) block mask (flex_attention: the
    (B, 2, T) ids of `vlmft_cli.attention_masks`) and position ids."""
    layouts = []
    for sample in samples:
        if sample.packed is None:
            raise ValueError("collate_packed needs samples from encode_packed")
        layouts.append((sample.packed.prefix_length, sample.packed.block_lengths))
    batch = collate(samples, pad_token_id)
    del batch["attention_mask"]
    batch.update(batch_mask_inputs(layouts, batch["input_ids"].shape[1], attn_implementation, dtype))
    return batch


def collate_padding_free(
    samples: Sequence[EncodedSample], pad_token_id: int, attn_implementation: str, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The samples back to back in one row of `sum(len)` tokens, each a causal document of its own with
    positions from 0, so every sample is computed as if it were alone and nothing is padded. Frames keep
    their order, as their image tokens do. A document's first token is never labelled (it opens a turn),
    so no loss term predicts across documents."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    if any(sample.extra for sample in samples):
        raise ValueError("padding-free rows take samples without per-token extras")
    row = EncodedSample(
        input_ids=torch.cat([sample.input_ids for sample in samples]),
        labels=torch.cat([sample.labels for sample in samples]),
        pixel_values=torch.cat([sample.pixel_values for sample in samples]),
        num_image_tokens=sum(sample.num_image_tokens for sample in samples),
    )
    batch = collate([row], pad_token_id)
    del batch["attention_mask"]
    documents = [(len(sample), ()) for sample in samples]
    batch.update(documents_mask_inputs([documents], len(row), attn_implementation, dtype))
    return batch
