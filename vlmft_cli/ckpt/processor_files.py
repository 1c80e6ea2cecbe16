"""Saving a backend's processor as its standard Hugging Face pieces.

Composite processors (`InternVLProcessor` and friends) cannot always `save_pretrained` without
torchvision, so the tokenizer and image processor are saved separately whenever the processor has them;
the backend's `load_processor(folder, home)` composes them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PIECES = ("tokenizer", "image_processor")


def save_processor(processor: Any, directory: Path) -> list[str]:
    """Write the processor's files into `directory`; returns the pieces saved."""
    pieces = [(name, getattr(processor, name, None)) for name in PIECES]
    present = [(name, piece) for name, piece in pieces if piece is not None]
    if not present:
        processor.save_pretrained(str(directory))
        return ["processor"]
    for _, piece in present:
        piece.save_pretrained(str(directory))
    return [name for name, _ in present]
