"""Frames and a conversation → Qwen2.5-VL / Qwen3-VL model inputs, labels on the assistant answers only.

The sequence is what the checkpoint's chat template renders with the frames as one video in the first
user turn, expanded as Qwen's processors expand a video:

    [<|im_start|>system\\n{system}<|im_end|>\\n]              (Qwen2.5-VL: "You are a helpful assistant.")
    <|im_start|>user\\n{video}{question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n
    … further user/assistant turns (text only) …

    Qwen2.5-VL video: <|vision_start|><|video_pad|>×(chunks·tokens_per_chunk)<|vision_end|>
    Qwen3-VL video:   per chunk, <{t:.1f} seconds><|vision_start|><|video_pad|>×tokens_per_chunk<|vision_end|>

The frame rate (`fps`, frames per second of the frames given; default `processor.fps`) sets Qwen3-VL's
timestamps and Qwen2.5-VL's `second_per_grid_ts` (temporal rope spacing). `mm_token_type_ids` (2 on
video pads) and `video_grid_thw` travel in `EncodedSample.extra`, with the frames as
`pixel_values_videos`; `EncodedSample.pixel_values` stays empty because the model's `pixel_values` are
images. Labels equal the ids on each answer and its `<|im_end|>`. Nothing is truncated.

The system turn is `processor.system_prompt`: the chat template's default as loaded, or what the
`system_prompt` setting names (`with_system_prompt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL.Image import Image

from vlmft_cli.chat_pieces import Piece, chatml_pieces, check_turns, resolve_system_prompt, tokenize_pieces
from vlmft_cli.model_backend import IGNORE_INDEX, EncodedSample, Turn
from vlmft_qwen_vl.processor import QwenVLProcessor, default_system_prompt
from vlmft_qwen_vl.tokens import timestamp_text
from vlmft_qwen_vl.video import chunk_timestamps, video_inputs

#: `mm_token_type_ids` value of a video token (0 text, 1 image, 2 video).
VIDEO_TOKEN_TYPE = 2


def with_system_prompt(processor: QwenVLProcessor, setting: str | None, *, official: str | None) -> QwenVLProcessor:
    """`processor` with the system turn of the `system_prompt` setting: None = the chat template's default
    (read from the tokenizer's template again, so an earlier choice does not stick), "none" = none,
    "official" = `official`, any other text = that text."""
    template = default_system_prompt(processor.tokenizer, processor.family)
    return replace(processor, system_prompt=resolve_system_prompt(setting, template=template, official=official))


def tokens_per_frame(processor: QwenVLProcessor) -> int:
    """Visual tokens a frame adds for an even frame count, rounded up: its share of a chunk's
    `<|video_pad|>` tokens and, for Qwen3-VL, of the chunk's vision start/end markers.

    Not counted: Qwen2.5-VL's one start/end pair per video and Qwen3-VL's "<t seconds>" text (about six
    tokens per chunk with the real vocabulary); `conversation_lengths` gives exact lengths.
    """
    per_chunk = processor.tokens_per_chunk + (2 if processor.family.timestamps else 0)
    return -(-per_chunk // processor.temporal_patch_size)


def resolve_fps(processor: QwenVLProcessor, fps: float | None) -> float:
    """The frame rate to encode with: `fps` when given, else the processor's default."""
    rate = processor.fps if fps is None else float(fps)
    if not rate > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    return rate


def video_pieces(processor: QwenVLProcessor, num_frames: int, fps: float, *, lead: str) -> list[Piece]:
    """The expanded video placeholder, with `lead` (the text before it in the turn) merged into its first
    text piece so that text tokenizes as one stretch, as in the rendered prompt."""
    start, end, pad = processor.vision_start_id, processor.vision_end_id, processor.video_pad_id
    chunks = processor.num_chunks(num_frames)
    if not processor.family.timestamps:
        return [Piece(text=lead), Piece(ids=(start, *[pad] * (chunks * processor.tokens_per_chunk), end))]
    pieces: list[Piece] = []
    for index, seconds in enumerate(chunk_timestamps(num_frames, fps, processor.temporal_patch_size)):
        pieces.append(Piece(text=(lead if index == 0 else "") + timestamp_text(seconds)))
        pieces.append(Piece(ids=(start, *[pad] * processor.tokens_per_chunk, end)))
    return pieces


def conversation_pieces(
    processor: QwenVLProcessor, num_frames: int, turns: Sequence[Turn], *, fps: float, generation_prompt: bool
) -> list[Piece]:
    """The pieces of the chat-template rendering of `turns`, the frames as a video in the first user turn."""
    return chatml_pieces(
        im_start=processor.im_start_id,
        im_end=processor.im_end_id,
        system_prompt=processor.system_prompt,
        turns=turns,
        frame_pieces=video_pieces(processor, num_frames, fps, lead="user\n") if num_frames > 0 else [],
        after_frames="",
        generation_prompt=generation_prompt,
    )


def conversation_lengths(
    processor: QwenVLProcessor, num_frames: int, turns: Sequence[Turn], fps: float | None = None
) -> list[int]:
    """Length of the encoded conversation cut after each assistant turn, without touching any image:
    element k equals `len(encode(frames, turns[: 2 * (k + 1)], fps))`."""
    check_turns(turns, ends_with="assistant")
    pieces = conversation_pieces(processor, num_frames, turns, fps=resolve_fps(processor, fps), generation_prompt=False)
    return tokenize_pieces(processor.tokenizer, pieces).qa_ends


def empty_pixel_values(processor: QwenVLProcessor) -> torch.Tensor:
    """No images: (0, patch values) — frames go to the model as `pixel_values_videos` in `extra`."""
    width = 3 * processor.temporal_patch_size * processor.patch_size**2
    return torch.zeros((0, width), dtype=torch.float32)


def encode_conversation(
    processor: QwenVLProcessor,
    frames: Sequence[Image],
    turns: Sequence[Turn],
    *,
    fps: float | None,
    generation_prompt: bool,
) -> EncodedSample:
    """Encode a conversation for training (ends with an answer) or generation (ends with a question)."""
    check_turns(turns, ends_with="user" if generation_prompt else "assistant")
    rate = resolve_fps(processor, fps)
    pieces = conversation_pieces(processor, len(frames), turns, fps=rate, generation_prompt=generation_prompt)
    tokenized = tokenize_pieces(processor.tokenizer, pieces)
    labels, spans = tokenized.labels, tokenized.answer_spans
    if generation_prompt:
        labels, spans = [IGNORE_INDEX] * len(tokenized.input_ids), []
    return video_sample(processor, frames, tokenized.input_ids, labels, spans, fps=rate)


def video_sample(
    processor: QwenVLProcessor,
    frames: Sequence[Image],
    input_ids: Sequence[int],
    labels: Sequence[int],
    spans: list[tuple[int, int]],
    *,
    fps: float,
) -> EncodedSample:
    """The sample of an encoded token sequence whose video holds `frames` at `fps`: the frames as
    `pixel_values_videos` with their grid (and Qwen2.5-VL's temporal spacing), `mm_token_type_ids`."""
    ids = torch.tensor(input_ids, dtype=torch.long)
    is_video = ids == processor.video_pad_id
    extra = {"mm_token_type_ids": is_video.long() * VIDEO_TOKEN_TYPE}
    visual_tokens = 0
    if frames:
        video = video_inputs(processor, frames)
        extra["pixel_values_videos"] = video.pixel_values_videos
        extra["video_grid_thw"] = video.video_grid_thw
        if not processor.family.timestamps:
            extra["second_per_grid_ts"] = torch.tensor([processor.temporal_patch_size / fps], dtype=torch.float32)
        markers = ids == processor.vision_start_id
        visual_tokens = int(is_video.sum()) + 2 * int(markers.sum())
    return EncodedSample(
        input_ids=ids,
        labels=torch.tensor(labels, dtype=torch.long),
        pixel_values=empty_pixel_values(processor),
        num_image_tokens=visual_tokens,
        answer_spans=spans,
        extra=extra,
    )
