"""InternVL3's packed encoding: the prefix once, then every QA block exactly as in its unpacked sample,
and a collate that turns the layouts into a batch block mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from vlmft_cli.model_backend import IGNORE_INDEX, SharedPrefixPacking, Turn
from vlmft_internvl3 import InternVL3Backend

QAS = [
    ("what is on the table?", "a red cup"),
    ("Q: satisfied?", "yes"),
    ("immediate next step?", "pick up the sanitizer"),
]


@pytest.fixture(scope="module")
def backend() -> InternVL3Backend:
    return InternVL3Backend()


@pytest.fixture(scope="module")
def processor(backend, vlmft_home):
    return backend.load_processor("tiny-internvl3", vlmft_home)


def frames(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(count)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(count)]


def turns(qas):
    return [turn for question, answer in qas for turn in (Turn("user", question), Turn("assistant", answer))]


@pytest.mark.parametrize("n_frames", [0, 1, 3])
@pytest.mark.parametrize("system_prompt", [None, "You are a robot."])
def test_packed_sequence_is_the_prefix_then_each_unpacked_block(backend, processor, n_frames, system_prompt):
    processor = dataclasses.replace(processor, system_prompt=system_prompt)
    images = frames(n_frames)
    packed = backend.encode_packed(processor, images, turns(QAS))
    separate = [backend.encode(processor, images, turns([qa])) for qa in QAS]
    layout = packed.packed
    prefix = layout.prefix_length
    assert prefix == backend.packed_prefix_length(processor, n_frames)
    assert layout.block_lengths == tuple(len(s) - prefix for s in separate) and len(packed) == layout.length
    assert packed.pixel_values.shape[0] == n_frames  # frames once
    start = prefix
    for number, sample in enumerate(separate):
        assert torch.equal(sample.input_ids[:prefix], packed.input_ids[:prefix])
        end = start + len(sample) - prefix
        assert torch.equal(packed.input_ids[start:end], sample.input_ids[prefix:])
        assert torch.equal(packed.labels[start:end], sample.labels[prefix:])
        (span_start, span_end), (alone_start, alone_end) = packed.answer_spans[number], sample.answer_spans[0]
        assert (span_start - start, span_end - start) == (alone_start - prefix, alone_end - prefix)
        start = end
    assert (packed.labels[:prefix] == IGNORE_INDEX).all()


def test_backend_offers_the_optional_packing_methods(backend):
    assert isinstance(backend, SharedPrefixPacking)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_collate_packed_masks_blocks_and_padding(backend, processor, implementation):
    images = frames(2)
    long, short = (
        backend.encode_packed(processor, images, turns(QAS)),
        backend.encode_packed(processor, images, turns(QAS[1:2])),
    )
    batch = backend.collate_packed([long, short], processor.pad_token_id, implementation, torch.float32)
    size = len(long)
    assert batch["attention_mask"].shape == (2, 1, size, size) and batch["position_ids"].shape == (2, size)
    assert batch["pixel_values"].shape[0] == 4
    allowed = batch["attention_mask"] if implementation == "sdpa" else batch["attention_mask"] == 0
    prefix, blocks = long.packed.prefix_length, long.packed.block_lengths
    second = prefix + blocks[0]
    row = allowed[0, 0]
    assert row[second, :prefix].all() and not row[second, prefix:second].any() and row[second, second]
    assert batch["position_ids"][0, second] == prefix  # the block restarts after the prefix
    # Padding of the short row attends to itself only (no fully masked row, so no NaN from sdpa).
    padded = allowed[1, 0, len(short) :]
    assert torch.equal(padded.sum(dim=1), torch.ones(size - len(short), dtype=padded.sum(dim=1).dtype))
    assert not allowed[1, 0, : len(short), len(short) :].any()
    with pytest.raises(ValueError, match="needs samples from encode_packed"):
        backend.collate_packed([backend.encode(processor, images, turns(QAS[:1]))], 0, implementation, torch.float32)
