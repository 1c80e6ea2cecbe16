"""Exact encoded lengths of many conversations at once, for backends that render with `chat_pieces`.

A backend's pieces depend on the frame count, the frame rate and the number of turns, never on what
the turns say (a turn's text is only ever pasted into one text piece, between fixed text). So the
pieces are built once per (frames, fps, turns) with marker texts; each text piece is then constant
(tokenized once) or `before + turn text + after`, and the lengths of those are tokenized in batches
over every conversation, each distinct text once, with the same tokenizer call as `tokenize_pieces`.
The result equals `tokenize_pieces(...).qa_ends` per conversation; a piece that breaks the assumption
(two turns in one piece) raises `ValueError`, and the caller falls back to one conversation at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from vlmft_cli.chat_pieces import Piece
from vlmft_cli.model_backend import Turn

#: One conversation to measure: (frames, turns, fps).
Conversation = tuple[int, Sequence[Turn], float | None]

_MARKER = re.compile("\ue000(\\d+)\ue001")
_BATCH = 4096


def _marker(index: int) -> str:
    return f"\ue000{index}\ue001"


class _Template:
    """The pieces of one (frames, fps, turns) shape: per piece a constant length or a turn slot."""

    def __init__(self, pieces: list[Piece], lengths_of: Callable[[list[str]], list[int]]) -> None:
        # steps: (constant tokens before this slot, turn index, before, after, ends_qa)
        self.steps: list[tuple[int, int | None, str, str, bool]] = []
        constant_texts = [piece.text for piece in pieces if piece.text is not None and not _MARKER.search(piece.text)]
        constant_lengths = dict(zip(constant_texts, lengths_of(constant_texts), strict=True))
        pending = 0
        for piece in pieces:
            if piece.text is None:
                pending += len(piece.ids)
            else:
                found = list(_MARKER.finditer(piece.text))
                if not found:
                    pending += constant_lengths[piece.text]
                elif len(found) == 1:
                    match = found[0]
                    self.steps.append(
                        (pending, int(match.group(1)), piece.text[: match.start()], piece.text[match.end() :], False)
                    )
                    pending = 0
                else:
                    raise ValueError("a piece holds the text of several turns")
            if piece.ends_qa:
                self.steps.append((pending, None, "", "", True))
                pending = 0


def bulk_qa_ends(
    tokenizer: Any,
    pieces_for: Callable[[int, Sequence[Turn], float | None], list[Piece]],
    conversations: Sequence[Conversation],
) -> list[list[int]]:
    """`tokenize_pieces(tokenizer, pieces_for(frames, turns, fps)).qa_ends` for every conversation."""

    def lengths_of(texts: list[str]) -> list[int]:
        lengths: list[int] = []
        for start in range(0, len(texts), _BATCH):
            batch = texts[start : start + _BATCH]
            lengths += [
                len(ids) for ids in tokenizer(batch, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            ]
        return lengths

    templates: dict[tuple[int, float | None, tuple[str, ...]], _Template] = {}
    text_index: dict[str, int] = {}
    plans: list[tuple[_Template, list[int]]] = []
    for frames, turns, fps in conversations:
        shape = (frames, fps, tuple(turn.role for turn in turns))
        template = templates.get(shape)
        if template is None:
            markers = [Turn(turn.role, _marker(index)) for index, turn in enumerate(turns)]
            template = templates[shape] = _Template(pieces_for(frames, markers, fps), lengths_of)
        slots = []
        for _, turn, before, after, _ in template.steps:
            if turn is not None:
                text = before + turns[turn].text + after
                slots.append(text_index.setdefault(text, len(text_index)))
        plans.append((template, slots))
    lengths = lengths_of(list(text_index))
    results: list[list[int]] = []
    for template, slots in plans:
        total, ends, slot = 0, [], iter(slots)
        for constant, turn, _, _, ends_qa in template.steps:
            total += constant
            if turn is not None:
                total += lengths[next(slot)]
            if ends_qa:
                ends.append(total)
        results.append(ends)
    return results
