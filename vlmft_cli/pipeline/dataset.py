"""A map-style torch dataset of examples: frames are read and encoded only when an item is fetched,
so skipping ahead on resume never touches an image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlmft_cli.errors import DataError
from vlmft_cli.model_backend import EncodedSample, ModelBackend
from vlmft_cli.pipeline.examples import Example


def load_frames(root: Path, images: Sequence[str]) -> list[Image.Image]:
    frames = []
    for relative in images:
        path = root / relative  # paths were checked to stay inside root when the JSONL was read
        try:
            with Image.open(path) as image:
                frames.append(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read frame {path}: {exc}") from None
    return frames


class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: Sequence[Example], root: Path, backend: ModelBackend, processor: Any) -> None:
        self.examples = list(examples)
        self.root = root
        self.backend = backend
        self.processor = processor

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        return [example.length for example in self.examples]

    def __getitem__(self, index: int) -> EncodedSample:
        example = self.examples[index]
        encoded = self.backend.encode(self.processor, load_frames(self.root, example.images), example.turns, fps=example.fps)
        if len(encoded) != example.length:
            # The length policy relies on exact lengths; a mismatch would let frames be truncated.
            raise RuntimeError(f"{example.id}: encoded {len(encoded)} tokens, the backend predicted {example.length}")
        return encoded


class Collator:
    """Pads a list of encoded samples through the backend (a picklable callable for worker processes)."""

    def __init__(self, backend: ModelBackend, pad_token_id: int) -> None:
        self.backend = backend
        self.pad_token_id = pad_token_id

    def __call__(self, samples: Sequence[EncodedSample]) -> dict[str, torch.Tensor]:
        return self.backend.collate(samples, self.pad_token_id)
