"""The process's runtime: which device it computes on, in which dtype, and quiet libraries.

`dtype_for` is the one precision → torch dtype map (model loading, the packed block mask, benchmarks).
torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmft_cli.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from vlmft_cli.profiles import Profile

#: Precision setting → the name of its torch dtype.
PRECISIONS: dict[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def dtype_for(precision: str) -> torch.dtype:
    """The torch dtype of a precision ("bf16", "fp16", "fp32"); a ValueError for any other."""
    import torch

    name = PRECISIONS.get(str(precision))
    if name is None:
        raise ValueError(f"unknown precision {str(precision)!r} (expected one of {', '.join(PRECISIONS)})")
    return getattr(torch, name)


def pick_device(profile: Profile) -> str:
    """"cuda" for a CUDA profile (an error when none is visible), else "cpu"."""
    import torch

    if profile.hardware.device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"profile {profile.name} is for a CUDA GPU and none is visible here", hint="use --profile cpu on a machine without a GPU")
        return "cuda"
    return "cpu"


def quiet_libraries() -> None:
    """Silence library chatter that says nothing to a user (progress is ours to report)."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "Failed to load CPU gemm_4bit_forward…" on import
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
