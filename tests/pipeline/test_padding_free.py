"""Padding-free stage-2 micro-batches: when they are used, and what the collator hands the trainer.
(That such a row trains exactly as a padded batch is tests/plugins/test_flex_attention.py's.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlmft_cli import plugins
from vlmft_cli.attention_masks import MASK_IDS_KEY
from vlmft_cli.model_backend import IGNORE_INDEX, Turn
from vlmft_cli.pipeline.dataset import SKIPPED_KEY, BadSample, Skipped
from vlmft_cli.pipeline.padding_free import PaddingFreeCollator, padding_free
from vlmft_internvl3 import InternVL3Backend
from vlmft_qwen_vl import Qwen25VLBackend


@pytest.fixture(scope="module")
def samples(vlmft_home):
    backend = InternVL3Backend()
    processor = backend.load_processor("tiny-internvl3", vlmft_home)
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    conversations = [[("what is here?", "a cup"), ("satisfied?", "yes")], [("next step?", "pick up the cup")]]
    encoded = [backend.encode(processor, frames[: i + 1], [Turn(r, t) for q, a in c for r, t in (("user", q), ("assistant", a))]) for i, c in enumerate(conversations)]
    return backend, processor, encoded


def test_only_stage_2_micro_batches_under_flex_with_a_backend_that_can():
    flex, sdpa = plugins.get("attention", "flex"), plugins.get("attention", "sdpa")
    internvl, qwen = InternVL3Backend(), Qwen25VLBackend()
    assert padding_free(2, 2, internvl, flex)
    assert not padding_free(1, 2, internvl, flex)  # stage 1 packs instead
    assert not padding_free(2, 1, internvl, flex)  # one sample: nothing to pad
    assert not padding_free(2, 2, internvl, sdpa)  # a dense mask over the row would cost (sum T)^2
    assert not padding_free(2, 2, qwen, flex)  # its rope positions would not restart per conversation


def test_collator_concatenates_and_counts(samples):
    backend, processor, encoded = samples
    collate = PaddingFreeCollator(backend, processor.pad_token_id, "flex_attention", torch.float32)
    bad = BadSample("v1", 3, "frame 00.jpg is not an image", "stage2/train.jsonl")
    batch = collate([encoded[0], Skipped((bad,)), encoded[1]])
    lengths = [len(sample) for sample in encoded]
    assert batch["input_ids"].shape == (1, sum(lengths)) and int(batch["num_tokens"]) == sum(lengths)
    assert int(batch["num_qas"]) == 2 and batch[SKIPPED_KEY] == [bad]
    assert torch.equal(batch["input_ids"][0], torch.cat([sample.input_ids for sample in encoded]))
    assert torch.equal(batch["labels"][0], torch.cat([sample.labels for sample in encoded]))
    assert batch["labels"][0, lengths[0]] == IGNORE_INDEX  # no loss term predicts across conversations
    assert batch["pixel_values"].shape[0] == 1 + 2
    assert batch["position_ids"][0].tolist() == list(range(lengths[0])) + list(range(lengths[1]))
    assert batch[MASK_IDS_KEY][0, 0].tolist() == [0] * lengths[0] + [1] * lengths[1]
    assert "attention_mask" not in batch
