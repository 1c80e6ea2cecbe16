"""The `flex` attention backend: packed and padded batches through FlexAttention give the outputs and LoRA
gradients of sdpa and eager with their dense masks; the BlockMask from the packing ids is the block mask
and skips exactly the tiles it masks out; availability and model support are what torch and transformers
actually do.

FlexAttention runs eagerly here (compiling costs ~28 s a shape on a CPU). torch 2.13 refuses its backward
on CPU (`_validate_device`), which is why the backend is unavailable on a CPU machine; the gradient checks
lift that guard for this module only, so the backward is torch's reference (unfused) one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlmft_cli import plugins
from vlmft_cli.attention import select_attention
from vlmft_cli.attention_masks import MASK_IDS_KEY, block_mask, document_ids, with_block_mask
from vlmft_cli.model_backend import IGNORE_INDEX, LoadOptions, Turn
from vlmft_cli.reporting import RecordingReporter
from vlmft_internvl3 import InternVL3Backend
from vlmft_internvl3.block_mask import batch_block_mask

QAS = [
    ("current goal is: remove the chips from the basket Q: immediate next step?", "place the packet on the table"),
    ("put the glass into the trash Q: satisfied?", "yes"),
    ("Q: what just happened?", "pick up the sanitizer"),
]
REFERENCES = ("sdpa", "eager")


def turns(qas):
    return [turn for question, answer in qas for turn in (Turn("user", question), Turn("assistant", answer))]


@pytest.fixture(scope="module")
def backend() -> InternVL3Backend:
    return InternVL3Backend()


@pytest.fixture(scope="module")
def frames() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]


@pytest.fixture
def cpu_backward(monkeypatch):
    """Lift torch's CPU refusal of FlexAttention's backward for one test (see the module docstring);
    the backend's cached availability never sees it lifted."""
    from vlmft_attention.flex import _device_problem

    monkeypatch.setattr("torch.nn.attention.flex_attention._validate_device", lambda query, key, value: None)
    _device_problem.cache_clear()
    yield
    _device_problem.cache_clear()


@pytest.fixture(scope="module")
def lora_model(backend, vlmft_home):
    """The tiny InternVL3 in fp32 with random (non-zero) LoRA weights; its attention is switched per test."""
    from peft import LoraConfig, get_peft_model

    plugins.get("attention", "flex").setup()
    loaded = backend.load("tiny-internvl3", LoadOptions(precision="fp32", attn_implementation="sdpa"), vlmft_home)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=backend.lora_target_pattern(), init_lora_weights=False)
    model = get_peft_model(loaded.model, config)
    model.train()
    return model, loaded.processor


def run(model, implementation: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(summed answer loss, logits at the labelled positions, LoRA gradients) under `implementation`."""
    model.base_model.model.set_attn_implementation(implementation)
    model.zero_grad(set_to_none=True)
    inputs = with_block_mask(dict(batch))
    labels = inputs.pop("labels")
    logits = model(**inputs).logits
    answered = labels[:, 1:] != IGNORE_INDEX
    predicting = logits[:, :-1][answered]
    loss = F.cross_entropy(predicting, labels[:, 1:][answered], reduction="sum")
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), predicting.detach(), grads


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def assert_same(got: tuple, reference: tuple, what: str) -> None:
    """Loss, answer logits and every LoRA gradient within fp32 tolerance (1e-5 relative)."""
    (loss, logits, grads), (ref_loss, ref_logits, ref_grads) = got, reference
    assert relative(loss, ref_loss) <= 1e-5, what
    assert relative(logits, ref_logits) <= 1e-5, what
    assert ref_grads.keys() == grads.keys() and len(grads) > 0
    worst = max(relative(grads[name], ref_grads[name]) for name in grads)
    assert worst <= 1e-5, (what, worst)


def assert_flex_matches(model, flex_batch: dict, reference_batches: dict[str, dict]) -> dict[str, tuple]:
    """Flex on `flex_batch` against each implementation on its batch; returns the references' results."""
    flex = run(model, "flex_attention", flex_batch)
    references = {name: run(model, name, batch) for name, batch in reference_batches.items()}
    for name, reference in references.items():
        assert_same(flex, reference, name)
    return references


def test_packed_batch_matches_sdpa_and_eager(backend, lora_model, frames, cpu_backward):
    model, processor = lora_model
    # Two rows of different lengths (the second padded), several QA blocks after a shared frame prefix.
    samples = [backend.encode_packed(processor, frames, turns(QAS)), backend.encode_packed(processor, frames[:1], turns(QAS[1:2]))]
    flex = backend.collate_packed(samples, processor.pad_token_id, "flex_attention", torch.float32)
    assert MASK_IDS_KEY in flex and "attention_mask" not in flex
    assert len(samples[1]) < flex["input_ids"].shape[1]
    references = {name: backend.collate_packed(samples, processor.pad_token_id, name, torch.float32) for name in REFERENCES}
    assert torch.equal(flex["position_ids"], references["sdpa"]["position_ids"])
    sdpa_loss = assert_flex_matches(model, flex, references)["sdpa"][0]
    # The control: the same rows with plain causal attention (blocks see each other) score differently.
    causal = {**references["sdpa"], "attention_mask": torch.ones_like(flex["input_ids"])}
    assert relative(run(model, "sdpa", causal)[0], sdpa_loss) > 1e-4


def test_padded_unpacked_batch_matches_sdpa_and_eager(backend, lora_model, frames, cpu_backward):
    model, processor = lora_model
    samples = [backend.encode(processor, frames, turns(QAS[:2])), backend.encode(processor, frames[:1], turns(QAS[2:]))]
    batch = backend.collate(samples, processor.pad_token_id)
    assert not batch["attention_mask"].all()  # one row is padded
    assert_flex_matches(model, batch, {name: batch for name in REFERENCES})


def test_padding_free_row_of_conversations_matches_a_padded_batch(backend, lora_model, frames, cpu_backward):
    from vlmft_internvl3.packing import collate_padding_free

    model, processor = lora_model
    # Stage-2 samples: whole conversations of different lengths, one row back to back, no padding.
    samples = [backend.encode(processor, frames[:1], turns(QAS[:2])), backend.encode(processor, frames, turns(QAS[2:]))]
    padded = run(model, "sdpa", backend.collate(samples, processor.pad_token_id))
    for implementation in ("flex_attention", "sdpa"):
        row = collate_padding_free(samples, processor.pad_token_id, implementation, torch.float32)
        assert row["input_ids"].shape == (1, sum(len(sample) for sample in samples))
        assert_same(run(model, implementation, row), padded, implementation)


def test_ids_give_the_block_mask_and_positions_of_packing():
    layouts = [(130, [100, 60, 150]), (40, [200])]
    length = 450
    ids, positions = document_ids([[layout] for layout in layouts], length)
    dense, dense_positions = batch_block_mask(layouts, length, "sdpa")
    assert torch.equal(positions, dense_positions)
    mask = block_mask(ids)
    allowed = mask.to_dense()  # (B, 1, tiles, tiles): tiles with anything to attend to
    for row, (prefix, blocks) in enumerate(layouts):
        size = prefix + sum(blocks)
        q, kv = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
        evaluated = mask.mask_mod(torch.tensor(row), torch.tensor(0), q, kv)
        assert torch.equal(evaluated[:size, :size], dense[row, 0, :size, :size])
        assert not evaluated[:size, size:].any() and not evaluated[size:, :size].any()  # padding stays apart
        # A tile is visited exactly when the dense block mask allows something in it; the rest are skipped.
        tiles = (length + 127) // 128
        reference = torch.zeros(tiles, tiles, dtype=torch.bool)
        for qt in range(tiles):
            for kt in range(tiles):
                reference[qt, kt] = evaluated[qt * 128 : (qt + 1) * 128, kt * 128 : (kt + 1) * 128].any()
        assert torch.equal(allowed[row, 0].bool(), reference)
    assert int(mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum()) < 2 * tiles * tiles


def test_ids_of_padding_free_rows_restart_each_document():
    ids, positions = document_ids([[(3, ()), (2, ())], [(1, (2,))]], 6)
    assert ids[0, 0].tolist() == [0, 0, 0, 1, 1, -1] and ids[0, 1].tolist() == [0] * 6
    assert positions.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 0, 0, 0]]  # the block restarts after its prefix
    allowed = block_mask(ids).mask_mod
    assert not allowed(torch.tensor(0), 0, torch.tensor(3), torch.tensor(2))  # documents do not see each other
    assert allowed(torch.tensor(0), 0, torch.tensor(4), torch.tensor(3))
    with pytest.raises(ValueError, match="more than the padded length"):
        document_ids([[(5, (3,))]], 6)


def torch_flex_backward_problem(device: str) -> bool:
    """Whether torch itself refuses FlexAttention's backward on `device` (the reference for availability)."""
    from torch.nn.attention.flex_attention import flex_attention

    query = torch.randn(1, 1, 16, 8, requires_grad=True, device=device)
    try:
        flex_attention(query, query, query).sum().backward()
    except NotImplementedError:
        return True
    return False


def test_selected_where_torch_can_train_it_else_sdpa_with_a_warning():
    reporter = RecordingReporter()
    chosen = select_attention("flex", reporter)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch_flex_backward_problem(device):
        assert chosen.name == "sdpa" and len(reporter.warnings) == 1
        assert "flex is unavailable" in reporter.warnings[0] and f"on {device}" in reporter.warnings[0]
    else:
        assert chosen.attn_implementation == "flex_attention" and reporter.warnings == []


def test_model_obstacle_follows_what_transformers_accepts(vlmft_home):
    from transformers import AutoModelForImageTextToText

    from vlmft_cli.backends import backend_for

    flex = plugins.get("attention", "flex")
    for name in ("tiny-internvl3", "tiny-qwen2.5-vl"):
        model_backend = backend_for(name)
        config = model_backend.architecture_config(model_backend.architecture_variants()[0])
        try:
            with torch.device("meta"):  # no weights: only whether the class accepts it matters
                AutoModelForImageTextToText.from_config(config, attn_implementation="flex_attention")
            accepted = True
        except ValueError:
            accepted = False
        obstacle = flex.model_obstacle(model_backend)
        assert (obstacle is None) == accepted, name
        if not accepted:
            assert "does not accept flex_attention" in obstacle


def test_a_model_that_cannot_run_flex_falls_back_to_sdpa(monkeypatch):
    from vlmft_attention.flex import FlexBackend
    from vlmft_cli.attention import Availability
    from vlmft_qwen_vl import Qwen25VLBackend

    monkeypatch.setattr(FlexBackend, "availability", lambda self: Availability.yes())  # as on a GPU
    reporter = RecordingReporter()
    assert select_attention("flex", reporter, InternVL3Backend()).name == "flex" and reporter.warnings == []
    assert select_attention("flex", reporter, Qwen25VLBackend()).name == "sdpa"
    assert len(reporter.warnings) == 1 and "Qwen2_5_VLForConditionalGeneration does not accept flex_attention" in reporter.warnings[0]


def test_grouped_heads_of_any_ratio_keep_their_kv(cpu_backward):
    """28 query heads over 4 K/V heads (Qwen2.5-7B's ratio, not a power of two): K/V are not repeated,
    and the result is sdpa's with the same grouping and mask."""
    from vlmft_attention.flex import flex_attention_forward

    torch.manual_seed(0)
    query = torch.randn(2, 28, 70, 8, requires_grad=True)
    key, value = torch.randn(2, 4, 70, 8, requires_grad=True), torch.randn(2, 4, 70, 8, requires_grad=True)
    ids, _ = document_ids([[(20, [30, 20])], [(10, [25])]], 70)
    seen = []
    module = torch.nn.Module()  # stands for the attention layer (the function does not read it)
    with pytest.MonkeyPatch.context() as patch:
        import torch.nn.attention.flex_attention as flex_module

        original = flex_module.flex_attention
        patch.setattr(flex_module, "flex_attention", lambda q, k, v, **kw: seen.append(k.shape[1]) or original(q, k, v, **kw))
        output, _ = flex_attention_forward(module, query, key, value, block_mask(ids), scaling=0.3)
    assert seen == [4]  # the kernel got the 4 K/V heads as they are
    allowed, _ = batch_block_mask([(20, [30, 20]), (10, [25])], 70, "sdpa")
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=0.3, enable_gqa=True).transpose(1, 2)
    real = ids[:, 0] >= 0  # padding rows differ by design (they attend to earlier padding, not themselves only)
    assert relative(output[real], expected[real]) <= 1e-6
    grads = torch.autograd.grad(output[real].sum(), (query, key, value))
    reference = torch.autograd.grad(expected[real].sum(), (query, key, value))
    assert max(relative(g, r) for g, r in zip(grads, reference, strict=True)) <= 1e-5
