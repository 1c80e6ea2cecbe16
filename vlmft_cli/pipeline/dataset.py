"""A map-style torch dataset of examples: frames are read and encoded only when an item is fetched,
so skipping ahead on resume never touches an image.

A frame that does not decode (an empty file, a file that is not an image, a truncated one, a
decompression bomb) raises `FrameError`; a dataset built with `skip_bad=True` (training, and the
evaluation inside it) returns a `Skipped` item instead, naming the JSONL line(s) it held. The collators
drop those items and report them in the batch under `SKIPPED_KEY`; a micro-batch left with no sample is
a one-token placeholder marked `EMPTY_KEY` (see `CurriculumTrainer.compute_loss`).

Dataloader workers ignore SIGINT and SIGTERM (`QuietWorkerInit`): a signal to the whole process group
(`timeout`, systemd, Slurm, Ctrl-C) is the main process's to handle, which stops with a checkpoint.
"""

from __future__ import annotations

import atexit
import signal
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlmft_cli.errors import DataError
from vlmft_cli.model_backend import EncodedSample, ModelBackend
from vlmft_cli.pipeline.examples import Example

#: Batch entries for the trainer, not for the model: the samples skipped in this micro-batch, and the
#: mark of a micro-batch that has no sample left (its inputs are a one-token placeholder).
SKIPPED_KEY = "skipped_samples"
EMPTY_KEY = "empty_batch"


class FrameError(DataError):
    """A frame that cannot be decoded; the message names it and why."""


def decode_frame(path: Path) -> Image.Image:
    """One frame as RGB; any failure to decode it, a decompression bomb included (PIL's warning too:
    an image over `Image.MAX_IMAGE_PIXELS` is no video frame), raises `FrameError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.convert("RGB")
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, …
        raise FrameError(f"cannot read frame {path}: {type(exc).__name__}: {exc}") from None


def load_frames(root: Path, images: Sequence[str]) -> list[Image.Image]:
    # paths were checked to stay inside root when the JSONL was read
    return [decode_frame(root / relative) for relative in images]


@dataclass(frozen=True)
class BadSample:
    """A sample skipped because its frames do not decode: its JSONL file (relative to the data folder),
    line and id, and why."""

    id: str
    line: int | None
    reason: str
    source: str | None = None

    @property
    def where(self) -> str:
        line = "?" if self.line is None else self.line
        return f"{self.source}:{line}" if self.source else f"line {line}"

    def __str__(self) -> str:
        return f"{self.where} ({self.id}): {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.source, "line": self.line, "id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class Skipped:
    """What a dataset built with `skip_bad=True` returns in place of an item it cannot read: the samples
    it held (several for a packed sequence, which shares one video's frames)."""

    samples: tuple[BadSample, ...]


def bad_sample(example: Example, error: FrameError, source: str | None) -> BadSample:
    return BadSample(example.id, example.line, str(error), source)


def split_skipped(items: Sequence[Any]) -> tuple[list[Any], list[BadSample]]:
    """The items that were read, and the samples of those that were skipped."""
    kept = [item for item in items if not isinstance(item, Skipped)]
    bad = [sample for item in items if isinstance(item, Skipped) for sample in item.samples]
    return kept, bad


def placeholder_batch(pad_token_id: int, skipped: Sequence[BadSample]) -> dict[str, Any]:
    """The inputs of a micro-batch whose samples were all skipped: one padding token, no label. The
    trainer runs it for a zero loss that keeps the graph (every rank's backward still reduces)."""
    return {
        "input_ids": torch.full((1, 1), pad_token_id, dtype=torch.long),
        "attention_mask": torch.ones((1, 1), dtype=torch.long),
        "labels": torch.full((1, 1), -100, dtype=torch.long),
        EMPTY_KEY: torch.tensor(True),
        SKIPPED_KEY: list(skipped),
    }


def kill_leftover_workers() -> None:
    """At exit: kill the daemonic child processes (dataloader workers) still running. Workers that ignore
    SIGTERM outlive multiprocessing's own exit handler, which terminates them with SIGTERM and then waits
    for them: a process leaving with an exception while a loader was still iterating would hang there."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


class QuietWorkerInit:
    """A dataloader `worker_init_fn`: ignore SIGINT and SIGTERM in the worker, then run `then` (the
    Trainer's seeding). Picklable, for spawned workers. Creating one registers `kill_leftover_workers`
    to run at exit (before multiprocessing's handler, atexit being last-in first-out)."""

    _exit_hook = False

    def __init__(self, then: Callable[[int], Any] | None = None) -> None:
        self.then = then
        if not QuietWorkerInit._exit_hook:
            atexit.register(kill_leftover_workers)
            QuietWorkerInit._exit_hook = True

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)


class ExampleDataset(torch.utils.data.Dataset):
    """`skip_bad`: a sample whose frames do not decode is returned as `Skipped` (else `FrameError` is
    raised); `source` names its JSONL file in what is reported."""

    def __init__(self, examples: Sequence[Example], root: Path, backend: ModelBackend, processor: Any, *, skip_bad: bool = False, source: str | None = None) -> None:
        self.examples = list(examples)
        self.root = root
        self.backend = backend
        self.processor = processor
        self.skip_bad = skip_bad
        self.source = source

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        return [example.length for example in self.examples]

    def __getitem__(self, index: int) -> EncodedSample | Skipped:
        example = self.examples[index]
        try:
            frames = load_frames(self.root, example.images)
        except FrameError as exc:
            if not self.skip_bad:
                raise
            return Skipped((bad_sample(example, exc, self.source),))
        encoded = self.backend.encode(self.processor, frames, example.turns, fps=example.fps)
        if len(encoded) != example.length:
            # The length policy relies on exact lengths; a mismatch would let frames be truncated.
            raise RuntimeError(f"{example.id}: encoded {len(encoded)} tokens, the backend predicted {example.length}")
        return encoded


class Collator:
    """Pads a list of encoded samples through the backend (a picklable callable for worker processes).
    `Skipped` items are dropped and listed under `SKIPPED_KEY`; with none left, the batch is the
    placeholder."""

    def __init__(self, backend: ModelBackend, pad_token_id: int) -> None:
        self.backend = backend
        self.pad_token_id = pad_token_id

    def __call__(self, samples: Sequence[EncodedSample | Skipped]) -> dict[str, Any]:
        kept, skipped = split_skipped(samples)
        if not kept:
            return placeholder_batch(self.pad_token_id, skipped)
        batch: dict[str, Any] = self.backend.collate(kept, self.pad_token_id)
        if skipped:
            batch[SKIPPED_KEY] = skipped
        return batch
