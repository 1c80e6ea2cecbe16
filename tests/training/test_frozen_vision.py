"""With gradient checkpointing on, no gradient flows into the frozen vision tower and projector of any
backend, and the LoRA gradients are those of the same model with checkpointing turned off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlmft_cli.model_backend import Turn
from vlmft_cli.settings import resolve_settings

TINY = ["tiny-internvl3", "tiny-qwen2.5-vl", "tiny-qwen3-vl"]
TURNS = [Turn("user", "what is on the table?"), Turn("assistant", "a red cup"), Turn("user", "done?"), Turn("assistant", "yes")]


def _frames(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(count)]


def _build(name: str, home):
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.lora_model import build_model

    cli = {"model": name, "home": home, "gradient_checkpointing": "on", "precision": "fp32", "lora_r": 4, "lora_dropout": 0.0}
    settings = resolve_settings(stage=1, profile="cpu", cli=cli, environ={}).settings
    backend = backend_for(settings.model, settings.backend)
    model, loaded = build_model(settings, backend, select_attention("sdpa"), device="cpu")
    generator = torch.Generator().manual_seed(0)
    for parameter_name, parameter in model.named_parameters():  # LoRA B starts at zero: make A's gradient count too
        if "lora_B" in parameter_name:
            parameter.data.normal_(0.0, 0.05, generator=generator)
    model.train()
    return model, backend, loaded.processor


def _lora_gradients(model, batch) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(**{key: value.clone() for key, value in batch.items()}).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", TINY)
def test_no_backward_through_the_vision_tower_and_lora_gradients_unchanged(vlmft_home, name):
    model, backend, processor = _build(name, vlmft_home)
    assert model.get_base_model().is_gradient_checkpointing
    batch = backend.collate([backend.encode(processor, _frames(2), TURNS)], processor.pad_token_id)

    towers = {child_name: child for child_name, child in model.get_base_model().model.named_children() if child_name != "language_model"}
    assert towers  # the vision tower (and InternVL's projector)
    ran: list[str] = []
    handles = [
        module.register_full_backward_hook(lambda module, grad_in, grad_out, name=f"{tower}.{sub}": ran.append(name))
        for tower, root in towers.items()
        for sub, module in root.named_modules()
    ]
    checkpointed = _lora_gradients(model, batch)
    for handle in handles:
        handle.remove()
    assert ran == []

    model.get_base_model().gradient_checkpointing_disable()
    assert not model.get_base_model().is_gradient_checkpointing
    reference = _lora_gradients(model, batch)
    assert checkpointed.keys() == reference.keys()
    assert all(reference[key].abs().sum() > 0 for key in reference)  # every LoRA matrix gets a gradient
    for key, expected in reference.items():
        torch.testing.assert_close(checkpointed[key], expected, rtol=1e-5, atol=1e-7)
