"""Frames and a conversation → InternVL3 model inputs, with labels on the assistant answers only.

The sequence is exactly what InternVL3's `-hf` chat template renders for a video turn:

    [<|im_start|>system\\n{system}<|im_end|>\\n]
    <|im_start|>user\\nFrame1: <img><IMG_CONTEXT>×N</img>\\nFrame2: …</img>\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n
    … further user/assistant turns (text only) …

It is assembled from pieces (`vlmft_cli.chat_pieces`): special tokens as ids and the text between them
tokenized in one batch (user text with `split_special_tokens`, so a literal "<|im_end|>" in data stays
text). This equals tokenizing the rendered string whenever an answer does not begin with whitespace.
Labels equal the ids on each answer and its `<|im_end|>`; everything else is IGNORE_INDEX. Nothing is
truncated. Batches are padded by the shared `collate`.

The system turn is `processor.system_prompt` (`with_system_prompt` sets it from the `system_prompt`
setting): by default none, as the `-hf` chat template writes none; `official` is the system message of
InternVL's own fine-tuning template (`OFFICIAL_SYSTEM_PROMPT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL.Image import Image

from vlmft_cli import chat_pieces
from vlmft_cli.chat_pieces import Piece, Tokenized, check_turns
from vlmft_cli.chat_pieces import collate as collate  # re-exported: the backend and packing batch with it
from vlmft_cli.model_backend import IGNORE_INDEX, EncodedSample, Turn
from vlmft_internvl3.processor import InternVL3Processor
from vlmft_internvl3.tokens import frame_label

#: The system message of InternVL's official fine-tuning scripts: their `internvl2_5` conversation
#: template (OpenGVLab/InternVL, internvl_chat/internvl/conversation.py; `--conv_style internvl2_5` in the
#: InternVL2.5 and InternVL3 fine-tuning scripts), rendered as a ChatML system turn before the first user
#: turn, as here. The `-hf` chat template omits it.
OFFICIAL_SYSTEM_PROMPT = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def with_system_prompt(processor: InternVL3Processor, setting: str | None) -> InternVL3Processor:
    """`processor` with the system turn of the `system_prompt` setting: None = the chat template's own
    (none for the `-hf` template), "none" = none, "official" = `OFFICIAL_SYSTEM_PROMPT`, else the text."""
    template = chat_pieces.template_system_prompt(processor.tokenizer)
    prompt = chat_pieces.resolve_system_prompt(setting, template=template, official=OFFICIAL_SYSTEM_PROMPT)
    return replace(processor, system_prompt=prompt)


def tokens_per_frame(processor: InternVL3Processor) -> int:
    """Tokens of one frame's image block: `<img>`, the `<IMG_CONTEXT>` placeholders and `</img>`.

    The "FrameK: " label and the newline that separate frames are ordinary text (about 4 tokens with the
    real Qwen2.5 vocabulary) and are not counted; `conversation_lengths` gives exact lengths.
    """
    return processor.image_seq_length + 2


def conversation_pieces(
    processor: InternVL3Processor, n_frames: int, turns: Sequence[Turn], *, generation_prompt: bool
) -> list[Piece]:
    """The pieces of the chat-template rendering of `turns`, frames in the first user turn."""
    image_block = (
        processor.image_start_id,
        *[processor.image_context_id] * processor.image_seq_length,
        processor.image_end_id,
    )
    frame_pieces: list[Piece] = []
    for frame in range(n_frames):
        frame_pieces.append(Piece(text=("user\n" if frame == 0 else "\n") + frame_label(frame)))
        frame_pieces.append(Piece(ids=image_block))
    return chat_pieces.chatml_pieces(
        im_start=processor.im_start_id,
        im_end=processor.im_end_id,
        system_prompt=processor.system_prompt,
        turns=turns,
        frame_pieces=frame_pieces,
        after_frames="\n",
        generation_prompt=generation_prompt,
    )


def tokenize_pieces(processor: InternVL3Processor, pieces: Sequence[Piece]) -> Tokenized:
    """`vlmft_cli.chat_pieces.tokenize_pieces` with the processor's tokenizer."""
    return chat_pieces.tokenize_pieces(processor.tokenizer, pieces)


def conversation_lengths(processor: InternVL3Processor, n_frames: int, turns: Sequence[Turn]) -> list[int]:
    """Length of the encoded conversation cut after each assistant turn, without touching any image:
    element k equals `len(encode(frames, turns[: 2 * (k + 1)]))`."""
    check_turns(turns, ends_with="assistant")
    return tokenize_pieces(processor, conversation_pieces(processor, n_frames, turns, generation_prompt=False)).qa_ends


def pixel_values(processor: InternVL3Processor, frames: Sequence[Image]) -> torch.Tensor:
    """Frames as one tile each: (n_frames, 3, H, W), normalised as the checkpoint expects."""
    if not frames:
        height, width = processor.image_size
        return torch.zeros((0, 3, height, width), dtype=torch.float32)
    values = processor.image_processor(images=list(frames), crop_to_patches=False, return_tensors="pt")["pixel_values"]
    if values.shape[0] != len(frames):
        raise ValueError(f"expected one tile per frame, got {values.shape[0]} tiles for {len(frames)} frames")
    return values


def encode_conversation(
    processor: InternVL3Processor, frames: Sequence[Image], turns: Sequence[Turn], *, generation_prompt: bool
) -> EncodedSample:
    """Encode a conversation for training (ends with an answer) or generation (ends with a question)."""
    check_turns(turns, ends_with="user" if generation_prompt else "assistant")
    pieces = conversation_pieces(processor, len(frames), turns, generation_prompt=generation_prompt)
    tokenized = tokenize_pieces(processor, pieces)
    input_ids, labels, spans = tokenized.input_ids, tokenized.labels, tokenized.answer_spans
    if generation_prompt:
        labels, spans = [IGNORE_INDEX] * len(input_ids), []
    return EncodedSample(
        input_ids=torch.tensor(input_ids, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        pixel_values=pixel_values(processor, frames),
        num_image_tokens=len(frames) * tokens_per_frame(processor),
        answer_spans=spans,
    )
