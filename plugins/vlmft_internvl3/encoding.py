"""Frames and a conversation → InternVL3 model inputs, with labels on the assistant answers only.

The sequence is exactly what InternVL3's `-hf` chat template renders for a video turn:

    [<|im_start|>system\\n{system}<|im_end|>\\n]
    <|im_start|>user\\nFrame1: <img><IMG_CONTEXT>×N</img>\\nFrame2: …</img>\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n
    … further user/assistant turns (text only) …

It is assembled from pieces: special tokens as ids and the text between them tokenized in one batch
(user text with `split_special_tokens`, so a literal "<|im_end|>" in data stays text). This equals
tokenizing the rendered string whenever an answer does not begin with whitespace. Labels equal the ids
on each answer and its `<|im_end|>`; everything else is IGNORE_INDEX. Nothing is truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL.Image import Image

from vlmft_cli.model_backend import IGNORE_INDEX, EncodedSample, Turn
from vlmft_internvl3.processor import InternVL3Processor
from vlmft_internvl3.tokens import frame_label


@dataclass(frozen=True)
class Piece:
    """A stretch of the sequence: text to tokenize, or literal token ids. `answer` marks labelled pieces
    with the index of the assistant turn they belong to; `ends_qa` marks the last piece of a QA pair."""

    text: str | None = None
    ids: tuple[int, ...] = ()
    answer: int | None = None
    ends_qa: bool = False


@dataclass
class Tokenized:
    """A tokenized conversation: ids, labels, one answer span per assistant turn, and the sequence length
    after each QA pair (what encoding the conversation cut after that answer would give)."""

    input_ids: list[int]
    labels: list[int]
    answer_spans: list[tuple[int, int]]
    qa_ends: list[int]


def tokens_per_frame(processor: InternVL3Processor) -> int:
    """Tokens of one frame's image block: `<img>`, the `<IMG_CONTEXT>` placeholders and `</img>`.

    The "FrameK: " label and the newline that separate frames are ordinary text (about 4 tokens with the
    real Qwen2.5 vocabulary) and are not counted; `conversation_lengths` gives exact lengths.
    """
    return processor.image_seq_length + 2


def check_turns(turns: Sequence[Turn], *, ends_with: str) -> None:
    """Turns must start with the user, alternate user/assistant and end with `ends_with`."""
    if not turns:
        raise ValueError("a conversation needs at least one turn")
    for index, turn in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if turn.role != expected:
            raise ValueError(
                f"turn {index} is from {turn.role!r}; turns must alternate user/assistant starting with user"
            )
    if turns[-1].role != ends_with:
        raise ValueError(f"the conversation must end with a {ends_with} turn, not {turns[-1].role}")


def conversation_pieces(
    processor: InternVL3Processor, n_frames: int, turns: Sequence[Turn], *, generation_prompt: bool
) -> list[Piece]:
    """The pieces of the chat-template rendering of `turns`, frames in the first user turn."""
    im_start, im_end = (processor.im_start_id,), (processor.im_end_id,)
    image_block = (
        processor.image_start_id,
        *[processor.image_context_id] * processor.image_seq_length,
        processor.image_end_id,
    )
    pieces: list[Piece] = []
    if processor.system_prompt is not None:
        pieces += [
            Piece(ids=im_start),
            Piece(text=f"system\n{processor.system_prompt}"),
            Piece(ids=im_end),
            Piece(text="\n"),
        ]
    answer_index = 0
    for index, turn in enumerate(turns):
        pieces.append(Piece(ids=im_start))
        if turn.role == "user":
            if index == 0 and n_frames > 0:
                for frame in range(n_frames):
                    pieces.append(Piece(text=("user\n" if frame == 0 else "\n") + frame_label(frame)))
                    pieces.append(Piece(ids=image_block))
                pieces.append(Piece(text=f"\n{turn.text}"))
            else:
                pieces.append(Piece(text=f"user\n{turn.text}"))
            pieces += [Piece(ids=im_end), Piece(text="\n")]
        else:
            pieces.append(Piece(text="assistant\n"))
            pieces.append(Piece(text=turn.text, answer=answer_index))
            pieces.append(Piece(ids=im_end, answer=answer_index))
            pieces.append(Piece(text="\n", ends_qa=True))
            answer_index += 1
    if generation_prompt:
        pieces += [Piece(ids=im_start), Piece(text="assistant\n")]
    return pieces


def tokenize_pieces(processor: InternVL3Processor, pieces: Sequence[Piece]) -> Tokenized:
    """Assemble `pieces` into token ids and labels; text pieces are tokenized in one batch."""
    texts = [piece.text for piece in pieces if piece.text is not None]
    encoded = iter(processor.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    result = Tokenized(input_ids=[], labels=[], answer_spans=[], qa_ends=[])
    spans: dict[int, list[int]] = {}
    for piece in pieces:
        ids = list(next(encoded)) if piece.text is not None else list(piece.ids)
        start = len(result.input_ids)
        result.input_ids += ids
        if piece.answer is None:
            result.labels += [IGNORE_INDEX] * len(ids)
        else:
            result.labels += ids
            span = spans.setdefault(piece.answer, [start, start])
            span[1] = len(result.input_ids)
        if piece.ends_qa:
            result.qa_ends.append(len(result.input_ids))
    result.answer_spans = [(span[0], span[1]) for _, span in sorted(spans.items())]
    return result


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


def collate(samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad samples into a batch: ids with `pad_token_id`, labels with IGNORE_INDEX, per-token extras
    with 0; pixel values of all samples concatenated in order (omitted when there are no frames)."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    length = max(len(sample) for sample in samples)
    batch = len(samples)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    for row, sample in enumerate(samples):
        size = len(sample)
        input_ids[row, :size] = sample.input_ids
        labels[row, :size] = sample.labels
        attention_mask[row, :size] = 1
    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    frames = [sample.pixel_values for sample in samples if sample.pixel_values.shape[0] > 0]
    if frames:
        out["pixel_values"] = torch.cat(frames, dim=0)
    for key in samples[0].extra:
        values = [sample.extra[key] for sample in samples]
        if all(
            value.dim() == 1 and value.shape[0] == len(sample) for value, sample in zip(values, samples, strict=True)
        ):
            padded = torch.zeros((batch, length), dtype=values[0].dtype)
            for row, value in enumerate(values):
                padded[row, : value.shape[0]] = value
            out[key] = padded
        else:
            out[key] = torch.cat(values, dim=0)
    return out
