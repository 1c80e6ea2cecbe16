"""The micro-batch a step benchmark trains on: real examples from a data folder, or a realistic synthetic
sample of the stage repeated.

Synthetic stage 1 is one QA of about 30 tokens about `max_frames` frames (4 by default); stage 2 is a
conversation of four QAs about `max_frames` frames (10 by default), the shape of an average RoboVQA
video. Frames are noise at 448 × 448 (the processor resizes them as it would real ones). Real examples go
through training's input pipeline: the length policy of `pipeline.splits.load_split`, the length-grouped order of
`SeededOrderSampler` (the first micro-batch of epoch 0) and `ExampleDataset`'s encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vlmft_cli.errors import DataError
from vlmft_cli.model_backend import EncodedSample, ModelBackend, Turn
from vlmft_cli.reporting import Reporter

if TYPE_CHECKING:
    from PIL.Image import Image

    from vlmft_cli.settings import Settings

#: RoboVQA-style (question, answer) pairs: planning, success, affordance and future prediction.
QAS: tuple[tuple[str, str], ...] = (
    ("current goal is: Please remove the chips from the basket Q: immediate next step?", "pick up the chips bag from the basket"),
    ("put the glass into the trash Q: satisfied?", "no"),
    ("Q: possible right now? place the packet on the table", "yes"),
    ("Q: what is likely to happen next?", "put the book on the table next to the lamp"),
)
QAS_PER_STAGE = {1: 1, 2: 4}
FRAME_SIZE = 448


def synthetic_turns(stage: int) -> list[Turn]:
    turns: list[Turn] = []
    for question, answer in QAS[: QAS_PER_STAGE[stage]]:
        turns += [Turn("user", question), Turn("assistant", answer)]
    return turns


def synthetic_frames(count: int, size: int = FRAME_SIZE, seed: int = 0) -> list[Image]:
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def synthetic_samples(backend: ModelBackend, processor: Any, stage: int, frames: int, count: int) -> list[EncodedSample]:
    """`count` copies of the stage's synthetic sample, encoded by the backend."""
    sample = backend.encode(processor, synthetic_frames(frames), synthetic_turns(stage))
    return [sample] * count


def data_samples(settings: Settings, backend: ModelBackend, processor: Any, count: int, reporter: Reporter) -> list[EncodedSample]:
    """The first micro-batch of `count` training examples of `settings.data`, as training orders them."""
    from vlmft_cli.pipeline.dataset import ExampleDataset
    from vlmft_cli.pipeline.sampling import SeededOrderSampler
    from vlmft_cli.pipeline.splits import load_split

    assert settings.data is not None
    examples, summary = load_split(settings, "train", backend, processor, reporter, required=True)  # type: ignore[misc]
    if len(examples) < count:
        raise DataError(f"{summary.path} has {len(examples)} usable examples; a micro-batch needs {count}")
    dataset = ExampleDataset(examples, settings.data, backend, processor)
    group = settings.micro_batch_size * settings.gradient_accumulation_steps()
    order = SeededOrderSampler(dataset.lengths, settings.seed, group_size=group).order()
    return [dataset[index] for index in order[:count]]


def batch_figures(samples: Sequence[EncodedSample], batch: dict[str, Any]) -> dict[str, int]:
    """Sizes of a collated micro-batch: samples, tokens (real and padded), label and image tokens."""
    from vlmft_cli.model_backend import IGNORE_INDEX

    return {
        "samples": len(samples),
        "tokens": int(batch["attention_mask"].sum()),
        "padded_tokens": int(batch["input_ids"].numel()),
        "label_tokens": int((batch["labels"] != IGNORE_INDEX).sum()),
        "image_tokens": sum(sample.num_image_tokens for sample in samples),
        "longest": max(len(sample) for sample in samples),
    }
