"""Loading the base model through its backend and putting LoRA on its language model.

The vision tower and projector stay frozen, and under gradient checkpointing no gradient flows into
them; LoRA goes on the backend's language-model projections (or `lora_pattern`); QLoRA loads the base
in 4-bit NF4. Stage 2 continues the stage-1 adapter's weights with a fresh optimizer. The chosen
attention implementation is checked on the loaded model, not assumed. Training builds its model here,
`vlmft eval` its load options and check, and the step and packing benchmarks the same trainable model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmft_cli.attention import AttentionBackend
from vlmft_cli.errors import ConfigError
from vlmft_cli.model_backend import LoadedModel, LoadOptions, ModelBackend
from vlmft_cli.settings import Settings


def load_options(settings: Settings, attention: AttentionBackend, device: str) -> LoadOptions:
    device_map: Any = None
    if settings.quantization != "none":
        device_map = {"": 0} if device == "cuda" else "cpu"
    return LoadOptions(
        precision=settings.precision,
        quantization=settings.quantization,
        attn_implementation=attention.attn_implementation,
        device_map=device_map,
    )


def check_attention(model: Any, expected: str) -> None:
    text_config = getattr(model.config, "text_config", model.config)
    actual = getattr(text_config, "_attn_implementation", None)
    if actual != expected:
        raise ConfigError(f"asked for attention {expected!r} but the language model runs {actual!r}")


def lora_pattern(settings: Settings, backend: ModelBackend) -> str:
    return settings.lora_pattern or backend.lora_target_pattern(tuple(settings.lora_projections))


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant gradient checkpointing on `model` (the base under PEFT), with no input made to
    require grad. transformers' `enable_input_require_grads`, which checkpointing calls, hooks every
    sub-model's embeddings, the vision patch embedding included: the frozen vision tower would then be
    recomputed and back-propagated for nothing. Non-reentrant checkpointing needs no input that requires
    grad (the LoRA weights inside each layer do), so not even the language model's embeddings are hooked:
    the gradient of the first layer's input would be computed for nothing too."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.disable_input_require_grads()


def build_model(
    settings: Settings,
    backend: ModelBackend,
    attention: AttentionBackend,
    *,
    device: str,
    init_adapter: Path | None = None,
) -> tuple[Any, LoadedModel]:
    """(trainable PEFT model, the loaded base with its processor)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    from vlmft_cli.chat_pieces import apply_system_prompt

    loaded = backend.load(settings.model, load_options(settings, attention, device), settings.home)
    loaded.processor = apply_system_prompt(backend, loaded.processor, settings.system_prompt)
    model = loaded.model
    check_attention(model, attention.attn_implementation)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if settings.quantization != "none":
        # Checkpointing is enabled below, after PEFT: both would hook the vision tower's inputs too.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    if init_adapter is not None:
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    else:
        config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=lora_pattern(settings, backend),
            bias="none",
        )
        torch.manual_seed(settings.seed)
        model = get_peft_model(model, config)
    if settings.gradient_checkpointing != "off":  # `auto` unresolved (no plan phase): the safe side
        enable_checkpointing(model.get_base_model())
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("no LoRA parameters matched; check lora_projections / lora_pattern")
    leaked = [name for name in trainable if "lora_" not in name]
    if leaked:
        raise RuntimeError(f"parameters outside LoRA are trainable: {leaked[:3]}")
    return model, loaded


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
