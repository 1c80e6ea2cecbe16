"""Loading Qwen2.5-VL / Qwen3-VL weights with transformers' native classes (no remote code).

`AutoModelForImageTextToText.from_pretrained` resolves `Qwen2_5_VLForConditionalGeneration` or
`Qwen3VLForConditionalGeneration` from the checkpoint's config, for hub checkpoints and the tiny offline
models alike; precision, quantization and attention come from `vlmft_cli.model_loading`. Quantization
leaves the vision tower and the LM head alone. A checkpoint of another model type (e.g. the Qwen3-VL MoE
models, `qwen3_vl_moe`) is refused before any weight is read.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel

from vlmft_cli.errors import PluginError
from vlmft_cli.model_backend import LoadOptions
from vlmft_cli.model_loading import from_pretrained_kwargs, no_progress_bars
from vlmft_qwen_vl.family import QwenFamily


def check_model_type(source: str, family: QwenFamily) -> None:
    """Fail with a clear message unless `source` is a checkpoint of `family`."""
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except ValueError as exc:
        raise PluginError(f"{source} is not a checkpoint transformers can read ({exc})") from exc
    if model_type != family.model_type:
        raise PluginError(
            f"{source} has model_type {model_type!r}, not {family.model_type!r}",
            hint=f"use a {family.display} checkpoint such as {family.hub_ids[0]}, or pass --backend",
        )


def load_model(source: str, options: LoadOptions, family: QwenFamily) -> PreTrainedModel:
    """Load the weights at `source` (local folder or hub id) as `family`'s native class."""
    check_model_type(source, family)
    with no_progress_bars():
        return AutoModelForImageTextToText.from_pretrained(
            source, **from_pretrained_kwargs(options, family.unquantized_modules)
        )
