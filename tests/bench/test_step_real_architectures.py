"""`bench step --random-init` on each Qwen backend's real architecture, in seconds.

What the benchmark relies on, checked separately:
- the architecture it builds (its config with the tiny tokenizer's token ids, the processor at the family's
  real frame size, training's freezing and LoRA) has the published shapes and parameter counts: built on
  the meta device, so no memory and no time;
- one LoRA training step of it trains: the real widths with one layer of each tower and a vocabulary cut
  to 1024 entries (the embedding and head are most of a one-layer model's weights and all the build time;
  every id the tiny tokenizer writes is below 1024), through `measure_step` itself, then a forward and
  backward of the trained model with a short sequence of small frames.

Parameter counts are derived by hand from the published architectures (MODELS.md; the derivation of the
full models is in tests/plugins/test_qwen_vl.py): per language layer, per vision block, the mergers, the
embeddings. LoRA is the recipe's r = 128 on q/k/v/o/gate/up/down: (in + out) · 128 per projection.
"""

from __future__ import annotations

import math

import pytest
import torch

from vlmft_cli.bench.step import StepOptions, measure_step
from vlmft_cli.settings import resolve_settings

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SMALL_VOCAB = 1024

#: Everything here is written out from the published numbers, not read from the code.
ARCH = {
    "Qwen2.5-VL-7B-Instruct": {
        "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "hidden": 3584, "vocab": 152064, "layers": 28, "vision_blocks": 32,
        "full": 8_292_166_656,
        # language: one layer 233,057,792 + embedding and head 2·152064·3584 + norm 3584 = 1,323,056,128;
        # vision: patch embedding 1,505,280 + one block 19,702,200 + merger 44,574,464 = 65,781,944
        "one_layer": 1_388_838_072,
        # q, o (3584 + 3584)·128 = 917,504; k, v (3584 + 512)·128 = 524,288; gate, up, down (3584 + 18944)·128
        # = 2,883,584
        "lora_per_layer": 11_534_336,
        # q (3584, 3584) with bias; k and v: 4 kv heads · 128 = 512
        "q_proj": (3584, 3584), "k_proj": (512, 3584), "gate_proj": (18944, 3584),
        # 280-px frames of 14-px patches, 2×2 merged: (280/14)² / 4 = 100 tokens per 2-frame chunk
        "frame_size": 280, "tokens_per_chunk": 100,
    },
    "Qwen3-VL-8B-Instruct": {
        "model": "Qwen/Qwen3-VL-8B-Instruct",
        "hidden": 4096, "vocab": 151936, "layers": 36, "vision_blocks": 27,
        "full": 8_767_123_696,
        # language: one layer 192,946,432 + 2·151936·4096 + 4096 = 1,437,610,240; vision: patch embedding
        # 1,770,624 + positions 2,654,208 + one block 15,239,504 + merger 40,119,040 (its deepstack layers
        # 8/16/24 are not in a one-block tower) = 59,783,376
        "one_layer": 1_497_393_616,
        # q, o (4096 + 4096)·128 = 1,048,576; k, v (4096 + 1024)·128 = 655,360; gate, up, down
        # (4096 + 12288)·128 = 2,097,152
        "lora_per_layer": 9_699_328,
        "q_proj": (4096, 4096), "k_proj": (1024, 4096), "gate_proj": (12288, 4096),
        # (288/16)² / 4 = 81
        "frame_size": 288, "tokens_per_chunk": 81,
    },
}  # fmt: skip


def _small_vocab_total(arch: dict) -> int:
    """The one-layer model with a 1024-entry embedding and head (by hand: the published one-layer count
    less the rows cut from both)."""
    return arch["one_layer"] - 2 * (arch["vocab"] - SMALL_VOCAB) * arch["hidden"]


def _bench_parts(variant: str, home, layers: int | None, **cli):
    """What `bench step --random-init --variant V --layers L` builds from: settings, backend, config, processor."""
    from vlmft_cli.backends import backend_for
    from vlmft_cli.bench.architecture import with_layers
    from vlmft_cli.bench.random_init import architecture_processor

    settings = resolve_settings(stage=1, profile="cpu", cli={"model": ARCH[variant]["model"], "home": home, **cli}, environ={}).settings
    backend = backend_for(settings.model, settings.backend)
    config, processor = architecture_processor(backend, with_layers(backend.architecture_config(variant), layers), home)
    return settings, backend, config, processor


def _build_lora_model(settings, backend, config, processor, device: str):
    from vlmft_cli.attention import select_attention
    from vlmft_cli.bench.random_init import RandomInitBackend
    from vlmft_cli.lora_model import build_model

    loader = RandomInitBackend(backend, config, processor, device, seed=settings.seed)
    model, _ = build_model(settings, loader, select_attention(settings.attention), device=device)
    return model


def _count(model) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@pytest.mark.parametrize("variant", list(ARCH))
def test_random_init_builds_the_published_architecture_on_meta(vlmft_home, variant):
    from vlmft_cli.bench.random_init import RandomInitBackend
    from vlmft_cli.model_backend import LoadOptions

    arch = ARCH[variant]
    settings, backend, config, processor = _bench_parts(variant, vlmft_home, None)
    # The processor: the family's real frame size (the tiny model's pinned size dropped), and the config
    # takes the tiny tokenizer's ids for the video placeholders.
    assert (processor.frame_size, processor.tokens_per_chunk) == (arch["frame_size"], arch["tokens_per_chunk"])
    assert config.video_token_id == processor.video_pad_id and config.vision_start_token_id == processor.vision_start_id
    # Full depth, real vocabulary: the published count.
    full = RandomInitBackend(backend, config, processor, "meta").load(settings.model, LoadOptions(precision="fp32"), vlmft_home).model
    assert sum(p.numel() for p in full.parameters()) == arch["full"]
    assert len(full.model.language_model.layers) == arch["layers"] and len(full.model.visual.blocks) == arch["vision_blocks"]

    # One layer of each tower, with training's freezing and LoRA (r 128, seven projections).
    settings, backend, config, processor = _bench_parts(variant, vlmft_home, 1)
    model = _build_lora_model(settings, backend, config, processor, "meta")
    assert _count(model) == (arch["lora_per_layer"], arch["one_layer"] + arch["lora_per_layer"])
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    prefix = "base_model.model.model.language_model.layers.0."
    for projection in PROJECTIONS:
        part = "mlp" if projection in ("gate_proj", "up_proj", "down_proj") else "self_attn"
        out_features, in_features = shapes[f"{prefix}{part}.{projection}.base_layer.weight"]
        assert shapes[f"{prefix}{part}.{projection}.lora_A.default.weight"] == (128, in_features)
        assert shapes[f"{prefix}{part}.{projection}.lora_B.default.weight"] == (out_features, 128)
    assert shapes[prefix + "self_attn.q_proj.base_layer.weight"] == arch["q_proj"]
    assert shapes[prefix + "self_attn.k_proj.base_layer.weight"] == arch["k_proj"]
    assert shapes[prefix + "mlp.gate_proj.base_layer.weight"] == arch["gate_proj"]
    assert not any(name.startswith("base_model.model.model.language_model.layers.1.") for name in shapes)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        f"{prefix}{'mlp' if p in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}.{p}.lora_{ab}.default.weight"
        for p in PROJECTIONS
        for ab in "AB"
    }


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(ARCH))
def test_bench_step_trains_a_lora_step_of_the_real_architecture(vlmft_home, monkeypatch, variant):
    """`measure_step` on the one-layer real architecture (vocabulary cut to 1024), then a forward and
    backward of the model it trained: finite loss, every adapter gets a gradient, the base stays frozen."""
    from dataclasses import replace

    from vlmft_cli.backends import backend_for
    from vlmft_cli.bench.random_init import RandomInitBackend
    from vlmft_cli.bench.samples import synthetic_frames, synthetic_turns
    from vlmft_cli.model_backend import pad_token_id

    arch = ARCH[variant]
    backend_class = type(backend_for(arch["model"]))
    real_config = backend_class.architecture_config

    def small_vocabulary(self, name):
        config = real_config(self, name)
        config.text_config.vocab_size = SMALL_VOCAB
        return config

    monkeypatch.setattr(backend_class, "architecture_config", small_vocabulary)
    built, frozen_before = [], []
    real_load = RandomInitBackend.load

    def keep_model(self, *args, **kwargs):
        loaded = real_load(self, *args, **kwargs)
        built.append(loaded.model)
        watched = ("layers.0.self_attn.q_proj.weight", "layers.0.mlp.down_proj.weight", "blocks.0.attn.qkv.weight")
        frozen_before.extend((name, p, p.detach().clone()) for name, p in loaded.model.named_parameters() if name.endswith(watched))
        return loaded

    monkeypatch.setattr(RandomInitBackend, "load", keep_model)
    cli = {"model": arch["model"], "home": vlmft_home, "max_frames": 2, "micro_batch_size": 1}
    resolved = resolve_settings(stage=1, profile="cpu", cli=cli, environ={})
    entry = measure_step(resolved, StepOptions(random_init=True, variant=variant, layers=1, steps=1, measure_matmul=False)).entries[0]

    assert entry.key == {"model": f"{variant} (random init, 1 layers)", "stage": 1, "layers": 1}
    assert entry.details["parameters"] == {"trainable": arch["lora_per_layer"], "total": _small_vocab_total(arch) + arch["lora_per_layer"]}
    # Two frames are one chunk at the real frame size, between one vision start and end pair.
    assert entry.details["batch"]["samples"] == 1 and entry.details["batch"]["image_tokens"] == arch["tokens_per_chunk"] + 2
    assert all(math.isfinite(value) and value > 0 for value in (entry.metrics["step_s"], entry.metrics["tokens_per_s"]))

    (model,) = built
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * len(PROJECTIONS) and all("lora_" in name for name in trainable)
    # LoRA's B starts at zero: after the benchmark's two optimizer steps it is not, so its gradients were not.
    assert all(p.abs().sum() > 0 for name, p in trainable.items() if "lora_B" in name)
    assert frozen_before and all(not p.requires_grad for _, p, _ in frozen_before)
    for name, parameter, before in frozen_before:
        assert torch.equal(parameter, before), name  # the base weights are frozen: the steps left them alone

    # A short sequence of small frames: 2 frames of (2·patch·merge)² pixels are one chunk of 4 tokens.
    _, backend, _, processor = _bench_parts(variant, vlmft_home, 1)  # the processor the benchmark used
    small = replace(processor, frame_size=2 * processor.patch_size * processor.merge_size)
    sample = backend.encode(small, synthetic_frames(2, size=64), synthetic_turns(1))
    assert int((sample.input_ids == small.video_pad_id).sum()) == 4
    batch = backend.collate([sample], pad_token_id(small.tokenizer))
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 1.0  # random weights: nowhere near a confident prediction
    loss.backward()
    for name, p in trainable.items():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
