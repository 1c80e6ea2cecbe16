"""Qwen2.5-VL and Qwen3-VL shared-prefix packing: the packed sequence is the prefix then each unpacked
QA block, every block carries the 3-D rope positions the model itself gives its unpacked sample, and on
the tiny models in float32 the per-QA answer losses and LoRA gradients of packed rows (one row, and two
rows with padding) equal those of the separate unpacked samples, with sdpa and eager attention."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image

from vlmft_cli.model_backend import IGNORE_INDEX, LoadOptions, SharedPrefixPacking, Turn
from vlmft_cli.training.pack_mode import packing_obstacle
from vlmft_qwen_vl import Qwen3VLBackend, Qwen25VLBackend

TOLERANCE = 1e-5
QAS = [
    ("current goal is: clear the table Q: what is on the table?", "a red cup"),
    ("Q: satisfied?", "yes"),
    ("immediate next step?", "pick up the sanitizer"),
]
OTHER_QAS = [("Q: what just happened?", "1- pick up the cup 2- done"), ("is the drawer open?", "no")]


@pytest.fixture(scope="module", params=[Qwen25VLBackend, Qwen3VLBackend], ids=["qwen2_5_vl", "qwen3_vl"])
def backend(request):
    return request.param()


@pytest.fixture(scope="module")
def processor(backend, vlmft_home):
    return backend.load_processor(backend.tiny_names()[0], vlmft_home)


def frames(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(count)]


def turns(qas):
    return [turn for question, answer in qas for turn in (Turn("user", question), Turn("assistant", answer))]


def lora_model(backend, home, implementation):
    base = backend.load(backend.tiny_names()[0], LoadOptions(precision="fp32", attn_implementation=implementation), home).model
    # Random A and B (not the zero B of a fresh adapter), so every LoRA gradient is non-zero.
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=backend.lora_target_pattern(), init_lora_weights=False)
    torch.manual_seed(0)
    model = get_peft_model(base, config)
    model.train()
    return model


def answer_losses(model, batch, spans_per_row):
    """Summed cross-entropy of each answer span (row by row, in order), computed from the logits."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs).logits.float()
    losses = []
    for row, spans in enumerate(spans_per_row):
        for start, end in spans:
            target = batch["input_ids"][row, start:end]
            assert (batch["labels"][row, start:end] == target).all()
            losses.append(torch.nn.functional.cross_entropy(logits[row, start - 1 : end - 1], target, reduction="sum"))
    return torch.stack(losses)


def losses_and_grads(model, batches):
    """Per-QA answer losses over `batches` [(batch, spans per row)] and the LoRA gradients of their sum."""
    model.zero_grad()
    losses = torch.cat([answer_losses(model, batch, spans) for batch, spans in batches])
    losses.sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return losses.detach(), grads


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_backends_pack_with_sdpa_and_eager(backend):
    class Attention:
        def __init__(self, implementation):
            self.name, self.attn_implementation, self.supports_block_mask = implementation, implementation, True

    assert isinstance(backend, SharedPrefixPacking)
    assert packing_obstacle(1, backend, Attention("sdpa")) is None and packing_obstacle(1, backend, Attention("eager")) is None
    assert "attn_implementation 'flash_attention_2'" in packing_obstacle(1, backend, Attention("flash_attention_2"))


@pytest.mark.parametrize("fps", [None, 3.0])
@pytest.mark.parametrize("system_prompt", ["default", None])
def test_packed_sequence_is_the_prefix_then_each_unpacked_block(backend, processor, fps, system_prompt):
    if system_prompt != "default":
        processor = dataclasses.replace(processor, system_prompt=system_prompt)
    images = frames(4)
    packed = backend.encode_packed(processor, images, turns(QAS), fps=fps)
    separate = [backend.encode(processor, images, turns([qa]), fps=fps) for qa in QAS]
    prefix = backend.packed_prefix_length(processor, 4, fps=fps)
    assert packed.packed.prefix_length == prefix
    assert len(packed) == packed.packed.length == prefix + sum(len(sample) - prefix for sample in separate)
    assert packed.packed.block_lengths == tuple(len(sample) - prefix for sample in separate)
    assert torch.equal(packed.extra["pixel_values_videos"], separate[0].extra["pixel_values_videos"])  # frames once
    start = prefix
    for number, sample in enumerate(separate):
        end = start + len(sample) - prefix
        assert torch.equal(packed.input_ids[:prefix], sample.input_ids[:prefix])
        assert torch.equal(packed.input_ids[start:end], sample.input_ids[prefix:])
        assert torch.equal(packed.labels[start:end], sample.labels[prefix:])
        assert torch.equal(packed.extra["mm_token_type_ids"][start:end], sample.extra["mm_token_type_ids"][prefix:])
        (span_start, span_end), (alone_start, alone_end) = packed.answer_spans[number], sample.answer_spans[0]
        assert (span_start - start, span_end - start) == (alone_start - prefix, alone_end - prefix)
        start = end
    assert (packed.labels[:prefix] == IGNORE_INDEX).all()


def test_each_block_has_the_positions_the_model_gives_it_alone(backend, processor, vlmft_home):
    """The reference: the loaded model's own `get_rope_index` on each unpacked sample (as its forward
    computes them from a padding mask), against the packed batch's `position_ids`."""
    model = backend.load(backend.tiny_names()[0], LoadOptions(precision="fp32"), vlmft_home).model
    images = frames(5)  # odd: the last chunk repeats a frame
    packed = backend.encode_packed(processor, images, turns(QAS), fps=1.5)
    batch = backend.collate_packed([packed], processor.pad_token_id, "sdpa", torch.float32)
    positions = batch["position_ids"]
    assert positions.shape == (3, 1, len(packed))
    prefix = packed.packed.prefix_length
    start = prefix
    for qa in QAS:
        alone = backend.collate([backend.encode(processor, images, turns([qa]), fps=1.5)], processor.pad_token_id)
        keys = ("input_ids", "mm_token_type_ids", "video_grid_thw", "second_per_grid_ts", "attention_mask")
        expected, _ = model.model.get_rope_index(**{key: alone[key] for key in keys if key in alone})
        end = start + alone["input_ids"].shape[1] - prefix
        assert torch.equal(positions[:, 0, :prefix], expected[:, 0, :prefix])
        assert torch.equal(positions[:, 0, start:end], expected[:, 0, prefix:])
        start = end
    # The video's positions are 3-D (not all three rows equal) and a later block does not continue the
    # earlier block's positions.
    assert not torch.equal(positions[0, 0, :prefix], positions[1, 0, :prefix])
    second = prefix + packed.packed.block_lengths[0]
    assert positions[0, 0, second] == positions[0, 0, prefix]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_losses_and_gradients_equal_the_unpacked_ones(backend, processor, vlmft_home, implementation):
    model = lora_model(backend, vlmft_home, implementation)
    pad = processor.pad_token_id
    images, other_images = frames(4, seed=1), frames(4, seed=2)
    long = backend.encode_packed(processor, images, turns(QAS))
    short = backend.encode_packed(processor, other_images, turns(OTHER_QAS))
    alone = [backend.encode(processor, images, turns([qa])) for qa in QAS]
    alone += [backend.encode(processor, other_images, turns([qa])) for qa in OTHER_QAS]
    unpacked = [(backend.collate([sample], pad), [sample.answer_spans]) for sample in alone]
    reference_losses, reference_grads = losses_and_grads(model, unpacked)
    flat = torch.cat([g.flatten() for g in reference_grads.values()])
    assert all(g.norm() > 0 for g in reference_grads.values())

    one_row = backend.collate_packed([long], pad, implementation, torch.float32)
    two_rows = backend.collate_packed([long, short], pad, implementation, torch.float32)
    assert two_rows["input_ids"].shape[1] == len(long) > len(short)  # the short row is padded
    for batch, rows, count in ((one_row, [long], len(QAS)), (two_rows, [long, short], len(alone))):
        losses, grads = losses_and_grads(model, [(batch, [row.answer_spans for row in rows])])
        assert float((losses - reference_losses[:count]).abs().max() / reference_losses[:count].abs().max()) < TOLERANCE
        if count == len(alone):
            packed_flat = torch.cat([grads[name].flatten() for name in reference_grads])
            assert relative(packed_flat, flat) < TOLERANCE
            assert max(relative(grads[name], g) for name, g in reference_grads.items()) < TOLERANCE

    # Controls: the packed rows with plain sequential positions (as if the blocks continued each other
    # in 1-D), or with a causal mask (later QAs see earlier ones), move the losses beyond the tolerance.
    spans = [long.answer_spans, short.answer_spans]
    flat_positions = dict(two_rows, position_ids=torch.arange(two_rows["input_ids"].shape[1]).expand(3, 2, -1))
    lengths = torch.tensor([len(long), len(short)])
    leaky = {key: value for key, value in two_rows.items() if key != "position_ids"}
    leaky["attention_mask"] = (torch.arange(two_rows["input_ids"].shape[1])[None] < lengths[:, None]).long()
    for wrong in (flat_positions, leaky):
        with torch.no_grad():
            losses = answer_losses(model, wrong, spans)
        assert float((losses - reference_losses).abs().max() / reference_losses.abs().max()) > 100 * TOLERANCE


def test_collate_packed_masks_blocks_and_padding(backend, processor):
    images = frames(2)
    long, short = backend.encode_packed(processor, images, turns(QAS)), backend.encode_packed(processor, images, turns(QAS[1:2]))
    for implementation in ("sdpa", "eager"):
        batch = backend.collate_packed([long, short], processor.pad_token_id, implementation, torch.float32)
        size = len(long)
        assert batch["attention_mask"].shape == (2, 1, size, size) and "packed_position_ids" not in batch
        assert batch["pixel_values_videos"].shape[0] == 2 * long.extra["pixel_values_videos"].shape[0]
        allowed = batch["attention_mask"] if implementation == "sdpa" else batch["attention_mask"] == 0
        prefix, blocks = long.packed.prefix_length, long.packed.block_lengths
        second = prefix + blocks[0]
        row = allowed[0, 0]
        assert row[second, :prefix].all() and not row[second, prefix:second].any() and row[second, second]
        assert row[:prefix, :prefix].equal(torch.ones(prefix, prefix, dtype=torch.bool).tril())
        padding = size - len(short)  # attends causally to the padding before it, so no row is empty
        assert torch.equal(allowed[1, 0, len(short) :, len(short) :], torch.ones(padding, padding, dtype=torch.bool).tril())
        assert not allowed[1, 0, : len(short), len(short) :].any() and not allowed[1, 0, len(short) :, : len(short)].any()
    with pytest.raises(ValueError, match="needs samples from encode_packed"):
        backend.collate_packed([backend.encode(processor, images, turns(QAS[:1]))], 0, "sdpa", torch.float32)


def test_the_packing_plan_counts_the_prefix_at_each_clips_frame_rate(vlmft_home, tmp_path):
    """Qwen3-VL's timestamps are text: at 0.2 fps the 4-frame prefix says "<12.5 seconds>" and is longer
    than at the default rate; the plan's prefix and blocks must be those `encode_packed` gives at 0.2 fps."""
    from vlmft_cli.pipeline.examples import Example
    from vlmft_cli.pipeline.packing import PackingData

    backend = Qwen3VLBackend()
    processor = backend.load_processor("tiny-qwen3-vl", vlmft_home)
    assert backend.packed_prefix_length(processor, 4, 0.2) != backend.packed_prefix_length(processor, 4)
    images = frames(4)
    examples = []
    for number, qa in enumerate(QAS):
        for rate in (0.2, None):
            (length,) = backend.conversation_lengths(processor, 4, turns([qa]), fps=rate)
            names = tuple(f"{rate}-{k}.jpg" for k in range(4))
            examples.append(Example(id=f"{rate}-{number}", images=names, turns=tuple(turns([qa])), turn_info=(), video_id=f"v{rate}", length=length, fps=rate))
    data = PackingData.from_examples(examples, lambda count, fps=None: backend.packed_prefix_length(processor, count, fps), 4096)
    for group, rate in zip(data.groups, (0.2, None), strict=True):
        layout = backend.encode_packed(processor, images, turns(QAS), fps=rate).packed
        assert (data.prefix_lengths[data.group_of[group[0]]], tuple(data.block_lengths[qa] for qa in group)) == (layout.prefix_length, layout.block_lengths)


def test_the_shared_prefix_split_renumbers_answers_and_refuses_different_prefixes():
    """`chat_pieces.split_shared_prefix`, which both backends' packing splits their conversations with."""
    from vlmft_cli.chat_pieces import Piece, split_shared_prefix

    head = [Piece(ids=(1,)), Piece(text="user\n")]
    first = [*head, Piece(text="q1"), Piece(text="a1", answer=0, ends_qa=True)]
    second = [*head, Piece(text="q2"), Piece(text="a2", answer=0, ends_qa=True)]
    prefix, blocks = split_shared_prefix([first, second], lambda pieces: 2)
    assert prefix == head and blocks == [first[2:], [second[2], dataclasses.replace(second[3], answer=1)]]
    with pytest.raises(ValueError, match="share the same prefix"):
        split_shared_prefix([first, [Piece(ids=(2,)), *second[1:]]], lambda pieces: 2)
