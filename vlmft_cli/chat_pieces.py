"""Chat encoding that model backends share: a conversation as pieces → token ids, labels, spans; batching.

A backend renders its chat template as a list of `Piece`s: literal token ids (special tokens, visual
placeholders) and the text between them. `tokenize_pieces` tokenizes all text pieces in one batch (with
`split_special_tokens`, so a literal "<|im_end|>" in data stays text) and puts labels on the pieces marked
as answers. This equals tokenizing the rendered string whenever an answer does not begin with
whitespace, and it yields the length after every QA pair without decoding any image. `collate` pads
encoded samples on the right into one batch.

The system turn comes from the processor (`processor.system_prompt`, None for none), so every encoding
of a processor (training samples, generation prompts, predicted lengths, packed sequences) has the same
one. The `system_prompt` setting picks it (`apply_system_prompt`): unset = what the model's chat template
writes for a conversation without a system message, `none` = no system turn, `official` = the model
backend's official fine-tuning default, any other text = that text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from vlmft_cli.errors import ConfigError
from vlmft_cli.model_backend import IGNORE_INDEX, EncodedSample, Turn

#: `system_prompt` setting values with a meaning of their own; any other text is the system turn itself.
SYSTEM_PROMPT_NONE = "none"
SYSTEM_PROMPT_OFFICIAL = "official"

_PROBE = "\x00vlmft-probe\x00"


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


def resolve_system_prompt(setting: str | None, *, template: str | None, official: str | None) -> str | None:
    """The system turn (None: none) for a `system_prompt` setting, given the one the chat template writes
    by default (`template`) and the backend's official fine-tuning one (`official`)."""
    if setting is None:
        return template
    if setting == SYSTEM_PROMPT_NONE:
        return None
    if setting == SYSTEM_PROMPT_OFFICIAL:
        return official
    return setting


def template_system_prompt(tokenizer: Any, chat_template: str | None = None) -> str | None:
    """The system turn a ChatML chat template (`chat_template`, else the tokenizer's) writes before a
    conversation that has none, or None if it writes none."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE}], chat_template=template, tokenize=False)
    head = "<|im_start|>system\n"
    end = rendered.find("<|im_end|>\n", len(head))
    if not rendered.startswith(head) or end < 0 or _PROBE in rendered[:end]:
        return None
    return rendered[len(head) : end]


def apply_system_prompt(backend: Any, processor: Any, setting: str | None) -> Any:
    """`processor` with the system turn the `system_prompt` setting asks for, through the backend's
    `with_system_prompt(processor, setting)`; a backend without that method only takes the default (unset)."""
    method = getattr(backend, "with_system_prompt", None)
    if method is None:
        if setting is None:
            return processor
        raise ConfigError(
            f"model backend {getattr(backend, 'name', type(backend).__name__)} cannot set a system prompt (system_prompt={setting!r})",
            hint="leave system_prompt unset: the model's chat template decides",
        )
    return method(processor, setting)


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


def qa_pairs(turns: Sequence[Turn]) -> list[tuple[Turn, Turn]]:
    """The (user, assistant) pairs of a conversation that ends with an answer."""
    check_turns(turns, ends_with="assistant")
    return [(turns[i], turns[i + 1]) for i in range(0, len(turns), 2)]


def split_shared_prefix(
    conversations: Sequence[Sequence[Piece]], prefix_end: Callable[[Sequence[Piece]], int]
) -> tuple[list[Piece], list[list[Piece]]]:
    """Shared-prefix packing's split of one-QA conversations' pieces (each as its unpacked sample renders):
    (the prefix they all share, each one's pieces after it with the answer renumbered to its block index).
    `prefix_end(pieces)` is the index of a conversation's first piece after the prefix."""
    prefix: list[Piece] | None = None
    blocks: list[list[Piece]] = []
    for index, pieces in enumerate(conversations):
        cut = prefix_end(pieces)
        if prefix is None:
            prefix = list(pieces[:cut])
        elif list(pieces[:cut]) != prefix:
            raise ValueError("the QAs of a packed sequence must share the same prefix")
        blocks.append([replace(piece, answer=index) if piece.answer is not None else piece for piece in pieces[cut:]])
    if prefix is None:
        raise ValueError("a packed sequence needs at least one QA")
    return prefix, blocks


def chatml_pieces(
    *,
    im_start: int,
    im_end: int,
    system_prompt: str | None,
    turns: Sequence[Turn],
    frame_pieces: Sequence[Piece],
    after_frames: str,
    generation_prompt: bool,
) -> list[Piece]:
    """A ChatML conversation (`<|im_start|>role\n…<|im_end|>\n`) as pieces; the backends differ only in
    `frame_pieces`, the frames of the first user turn with the `user\n` lead merged into their first text
    piece, and `after_frames`, the text between the frames and the question."""
    start, end = (im_start,), (im_end,)
    pieces: list[Piece] = []
    if system_prompt is not None:
        pieces += [Piece(ids=start), Piece(text=f"system\n{system_prompt}"), Piece(ids=end), Piece(text="\n")]
    answer_index = 0
    for index, turn in enumerate(turns):
        pieces.append(Piece(ids=start))
        if turn.role == "user":
            if index == 0 and frame_pieces:
                pieces += [*frame_pieces, Piece(text=f"{after_frames}{turn.text}")]
            else:
                pieces.append(Piece(text=f"user\n{turn.text}"))
            pieces += [Piece(ids=end), Piece(text="\n")]
        else:
            pieces.append(Piece(text="assistant\n"))
            pieces.append(Piece(text=turn.text, answer=answer_index))
            pieces.append(Piece(ids=end, answer=answer_index))
            pieces.append(Piece(text="\n", ends_qa=True))
            answer_index += 1
    if generation_prompt:
        pieces += [Piece(ids=start), Piece(text="assistant\n")]
    return pieces


def tokenize_pieces(tokenizer: Any, pieces: Sequence[Piece]) -> Tokenized:
    """Assemble `pieces` into token ids and labels; text pieces are tokenized in one batch."""
    texts = [piece.text for piece in pieces if piece.text is not None]
    encoded = iter(tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else [])
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


def is_per_token(value: torch.Tensor, sample: EncodedSample) -> bool:
    """Whether an `extra` tensor is per-token (1-D, one value per input id) rather than per-sample data."""
    return value.dim() == 1 and value.shape[0] == len(sample)


def collate(samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad samples into a batch: ids with `pad_token_id`, labels with IGNORE_INDEX, per-token extras
    with 0 (every sample must carry them); pixel values and other extras of the samples that have them
    concatenated in order (pixel values omitted when no sample has frames)."""
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
    keys = list(dict.fromkeys(key for sample in samples for key in sample.extra))
    for key in keys:
        present = [(sample, sample.extra[key]) for sample in samples if key in sample.extra]
        if all(is_per_token(value, sample) for sample, value in present):
            if len(present) != batch:
                raise ValueError(f"per-token extra {key!r} is missing from some samples of the batch")
            padded = torch.zeros((batch, length), dtype=present[0][1].dtype)
            for row, (_, value) in enumerate(present):
                padded[row, : value.shape[0]] = value
            out[key] = padded
        else:
            out[key] = torch.cat([value for _, value in present], dim=0)
    return out
