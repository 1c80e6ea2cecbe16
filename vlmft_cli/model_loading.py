"""What every model backend's `load` shares: `LoadOptions` → `from_pretrained` keyword arguments.

Precision becomes a dtype; 4-bit is bitsandbytes NF4 with double quantization and bf16 compute, 8-bit is
LLM.int8; the modules a backend names (vision tower, projector, LM head) stay unquantized. Also a guard
that silences transformers' progress bars while weights load. Imported only when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import BitsAndBytesConfig
from transformers.utils import logging as hf_logging

from vlmft_cli.model_backend import LoadOptions
from vlmft_cli.runtime import PRECISIONS, dtype_for

#: Precision → dtype, from the one map (`runtime.dtype_for`).
DTYPES: dict[str, torch.dtype] = {precision: dtype_for(precision) for precision in PRECISIONS}


def quantization_config(quantization: str, unquantized_modules: Sequence[str]) -> BitsAndBytesConfig | None:
    """The bitsandbytes config for "4bit" / "8bit" (None for "none"), leaving `unquantized_modules` alone.

    transformers matches those names from the start of a module name up to a module boundary, or as a suffix.
    """
    if quantization == "none":
        return None
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=list(unquantized_modules),
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(unquantized_modules))
    raise ValueError(f"unknown quantization {quantization!r} (expected none, 4bit or 8bit)")


def from_pretrained_kwargs(options: LoadOptions, unquantized_modules: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained` that realise `options`."""
    kwargs: dict[str, Any] = {"dtype": dtype_for(options.precision), "attn_implementation": options.attn_implementation}
    quantization = quantization_config(options.quantization, unquantized_modules)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if options.device_map is not None:
        kwargs["device_map"] = options.device_map
    return kwargs


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Disable transformers/huggingface_hub progress bars inside the block, restoring the setting after."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
