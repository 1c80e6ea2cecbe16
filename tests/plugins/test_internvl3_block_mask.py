"""Shared-prefix packing: [frames][QA1][QA2] under a block mask scores each QA as if it were alone.

This is the property a packed stage-1 sequence relies on: with a 4-D block attention mask and positions
restarting after the prefix, the summed answer loss of the packed row equals that of separate samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlmft_cli.model_backend import IGNORE_INDEX, LoadOptions, Turn
from vlmft_internvl3 import InternVL3Backend
from vlmft_internvl3.block_mask import shared_prefix_block_mask

QAS = [
    (
        "current goal is: Please remove the chips from the basket Q: immediate next step?",
        "place the packet on the table",
    ),
    ("put the glass into the trash Q: satisfied?", "yes"),
    ("Q: what just happened?", "pick up the sanitizer"),
]


def summed_answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies over labelled positions (one row)."""
    return F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.fixture(scope="module")
def backend() -> InternVL3Backend:
    return InternVL3Backend()


@pytest.fixture(scope="module")
def frames() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]


@pytest.fixture(scope="module")
def separate(backend, vlmft_home, frames):
    processor = backend.load_processor("tiny-internvl3", vlmft_home)
    return processor, [backend.encode(processor, frames, [Turn("user", q), Turn("assistant", a)]) for q, a in QAS]


def packed_row(processor, samples):
    """(input_ids, labels, prefix_length, block_lengths): the shared frame prefix once, then each QA."""
    first = samples[0].input_ids.tolist()
    prefix = len(first) - first[::-1].index(processor.image_end_id)  # through the last </img>
    for sample in samples:
        assert torch.equal(sample.input_ids[:prefix], samples[0].input_ids[:prefix])
    ids = [samples[0].input_ids[:prefix]] + [sample.input_ids[prefix:] for sample in samples]
    labels = [samples[0].labels[:prefix]] + [sample.labels[prefix:] for sample in samples]
    return torch.cat(ids)[None], torch.cat(labels)[None], prefix, [len(sample) - prefix for sample in samples]


def test_block_mask_support_by_implementation(backend):
    assert backend.supports_block_mask("sdpa") and backend.supports_block_mask("eager")
    assert not backend.supports_block_mask("flash_attention_2")
    with pytest.raises(ValueError):
        shared_prefix_block_mask(3, [2], "flash_attention_2")


def test_block_mask_layout():
    mask, positions = shared_prefix_block_mask(2, [2, 3], "sdpa")
    assert mask.shape == (1, 1, 7, 7) and mask.dtype == torch.bool
    assert positions.tolist() == [[0, 1, 2, 3, 2, 3, 4]]
    allowed = mask[0, 0]
    assert allowed[1, :2].tolist() == [True, True] and not allowed[0, 1]  # causal prefix
    assert allowed[6, :2].all() and not allowed[6, 2:4].any() and allowed[6, 4:7].all()  # sees prefix + itself only
    additive, _ = shared_prefix_block_mask(2, [2, 3], "eager", dtype=torch.float32)
    assert torch.equal(additive[0, 0] == 0, allowed)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_answers_score_as_separate_samples(backend, vlmft_home, frames, separate, implementation):
    processor, samples = separate
    model = backend.load(
        "tiny-internvl3", LoadOptions(precision="fp32", attn_implementation=implementation), vlmft_home
    ).model
    model.eval()
    pixel_values = samples[0].pixel_values
    with torch.no_grad():
        expected = sum(
            summed_answer_loss(model(input_ids=s.input_ids[None], pixel_values=pixel_values).logits, s.labels[None])
            for s in samples
        )
        input_ids, labels, prefix, blocks = packed_row(processor, samples)
        mask, position_ids = shared_prefix_block_mask(prefix, blocks, implementation, dtype=torch.float32)
        packed = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=mask, position_ids=position_ids)
        got = summed_answer_loss(packed.logits, labels)
        causal = summed_answer_loss(model(input_ids=input_ids, pixel_values=pixel_values).logits, labels)
    assert int((labels != IGNORE_INDEX).sum()) == sum(int((s.labels != IGNORE_INDEX).sum()) for s in samples)
    assert input_ids.shape[1] < sum(len(s) for s in samples)
    packed_error = float(abs(got - expected) / expected)
    causal_error = float(abs(causal - expected) / expected)
    assert packed_error < 1e-5
    # The control: without the block mask, later blocks see earlier ones and the loss moves (even for a
    # random, near-uniform tiny model) far beyond the packing tolerance.
    assert causal_error > 1e-4 and causal_error > 100 * packed_error
