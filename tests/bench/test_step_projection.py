"""The curriculum projection of `bench step`, on hand-worked sizes: token lengths from conversation
lengths, each stage's tokens, attention pairs, frames and labels, and the hours at a rate."""

import pytest
import torch

from vlmft_cli.bench.projection import DataSizes, ModelRates, TextLengths, project, stage_counts

# 2 videos, 6 QAs (3 per video), 1 frame in stage 1 and 2 in stage 2, one epoch each.
SIZES = DataSizes(videos=2, stage1_qas=6, frames=(1, 2), epochs=(1, 1))
# q = 2 tokens per QA; prefixes 3 (stage 1) and 5 (stage 2); 1 labelled token per QA.
LENGTHS = TextLengths(per_qa=2, prefix=(3, 5), labelled_per_qa=1, tokens_per_frame=1)


def test_text_lengths_from_conversation_lengths():
    # after 1, 2, 3 QAs: 5, 7, 9 tokens with one frame; 7, 9, 11 with two: q = 2, P(1) = 3, P(2) = 5
    assert TextLengths.from_lengths({1: [5, 7, 9], 2: [7, 9, 11]}, (1, 2), 1.0, 1) == LENGTHS


def test_stage_counts_by_hand_and_against_training_s_block_mask():
    from vlmft_internvl3.block_mask import batch_block_mask

    packed = stage_counts(1, LENGTHS, SIZES, packed=True)
    # per video: 3 + 3·2 = 9 tokens; pairs 3·4/2 + 3·(2·3 + 2·3/2) = 6 + 27 = 33; one frame; 6 labels in all
    assert (packed.tokens, packed.pairs, packed.frames, packed.labelled) == (18, 66, 2, 6)
    mask, _ = batch_block_mask([(3, (2, 2, 2))], 9, "sdpa")  # the mask training builds for such a row
    assert int(mask.sum()) * 2 == packed.pairs
    unpacked = stage_counts(1, LENGTHS, SIZES, packed=False)
    # per QA: 3 + 2 = 5 tokens, 15 causal pairs, one frame
    assert (unpacked.tokens, unpacked.pairs, unpacked.frames) == (30, 90, 6)
    second = stage_counts(2, LENGTHS, SIZES, packed=False)
    # per video: 5 + 3·2 = 11 tokens, 66 causal pairs, two frames
    assert (second.tokens, second.pairs, second.frames, second.labelled) == (22, 132, 4, 6)
    assert torch.ones(11, 11).tril().sum() * 2 == second.pairs


def test_hours_are_the_curriculum_flops_over_the_rate():
    rates = ModelRates(vision_per_frame=1, language_per_token=10, attention_per_pair=100, head_per_label=1000)
    projection = project(rates, LENGTHS, 3600.0, stage1_packed=True, sizes=SIZES)
    stage1 = 2 * 1 + 18 * 10 + 66 * 100 + 6 * 1000  # 12,782 FLOPs
    stage2 = 4 * 1 + 22 * 10 + 132 * 100 + 6 * 1000  # 19,424 FLOPs
    assert projection.stage_flops == (stage1, stage2)
    assert projection.stage_hours == pytest.approx((stage1 / 3600 / 3600, stage2 / 3600 / 3600))
    assert projection.curriculum_hours == pytest.approx((stage1 + stage2) / 3600**2)
    assert projection.as_dict()["data"]["videos"] == SIZES.videos  # the sizes projected for, not RoboVQA's
