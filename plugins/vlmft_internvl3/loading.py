"""Loading InternVL3 weights with transformers' native class: precision, quantization, attention, placement.

Everything goes through `AutoModelForImageTextToText.from_pretrained` (→ `InternVLForConditionalGeneration`,
no remote code), for real `-hf` checkpoints and the tiny offline model alike; the options become keyword
arguments in `vlmft_cli.model_loading`. Quantization applies to the language model only: the vision
tower, the projector and the LM head stay in the compute precision.
`LoadOptions.trust_remote_code` is ignored: the native classes need no remote code.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel

from vlmft_cli import model_loading
from vlmft_cli.errors import PluginError
from vlmft_cli.model_backend import LoadOptions
from vlmft_cli.model_loading import no_progress_bars

#: Modules kept out of bitsandbytes quantization.
UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]

MODEL_TYPE = "internvl"


def from_pretrained_kwargs(options: LoadOptions) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained` that realise `options` for InternVL3."""
    return model_loading.from_pretrained_kwargs(options, UNQUANTIZED_MODULES)


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
