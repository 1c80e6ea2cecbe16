"""Loading InternVL3 weights with transformers' native class: precision, quantization, attention, placement.

Everything goes through `AutoModelForImageTextToText.from_pretrained` (→ `InternVLForConditionalGeneration`,
no remote code), for real `-hf` checkpoints and the tiny offline model alike. 4-bit is bitsandbytes NF4
with double quantization and bf16 compute; 8-bit is LLM.int8. Quantization applies to the language
model only: the vision tower, the projector and the LM head stay in the compute precision.
`LoadOptions.trust_remote_code` is ignored: the native classes need no remote code.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, BitsAndBytesConfig, PreTrainedModel

from vlmft_cli.errors import PluginError
from vlmft_cli.model_backend import LoadOptions
from vlmft_internvl3.quiet import no_progress_bars

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

#: Modules kept out of bitsandbytes quantization (transformers matches these from the start of a module
#: name up to a module boundary, or as a suffix).
UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]

MODEL_TYPE = "internvl"


def quantization_config(quantization: str) -> BitsAndBytesConfig | None:
    """The bitsandbytes config for "4bit" / "8bit", None for "none"."""
    if quantization == "none":
        return None
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=list(UNQUANTIZED_MODULES),
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(UNQUANTIZED_MODULES))
    raise ValueError(f"unknown quantization {quantization!r} (expected none, 4bit or 8bit)")


def from_pretrained_kwargs(options: LoadOptions) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained` that realise `options`."""
    if options.precision not in DTYPES:
        raise ValueError(f"unknown precision {options.precision!r} (expected one of {', '.join(DTYPES)})")
    kwargs: dict[str, Any] = {"dtype": DTYPES[options.precision], "attn_implementation": options.attn_implementation}
    quantization = quantization_config(options.quantization)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if options.device_map is not None:
        kwargs["device_map"] = options.device_map
    return kwargs


def check_native_checkpoint(source: str) -> None:
    """Fail with a clear message unless `source` is a native (`-hf`) InternVL checkpoint."""
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except ValueError as exc:  # e.g. the original remote-code layout ("internvl_chat")
        raise PluginError(
            f"{source} is not a checkpoint in transformers' native InternVL format ({exc})",
            hint="use the '-hf' variant, e.g. OpenGVLab/InternVL3-8B-hf",
        ) from exc
    if model_type != MODEL_TYPE:
        raise PluginError(
            f"{source} has model_type {model_type!r}, not {MODEL_TYPE!r}", hint="use an InternVL3 '-hf' checkpoint"
        )


def load_model(source: str, options: LoadOptions) -> PreTrainedModel:
    """Load the weights at `source` (local folder or hub id) as `InternVLForConditionalGeneration`."""
    check_native_checkpoint(source)
    with no_progress_bars():
        return AutoModelForImageTextToText.from_pretrained(source, **from_pretrained_kwargs(options))
