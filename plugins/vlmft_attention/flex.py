"""PyTorch FlexAttention (`torch.nn.attention.flex_attention`): attention that skips masked tiles.

Shared-prefix packing hands it a `BlockMask` built from per-token document and block ids
(`vlmft_cli.attention_masks`) instead of a dense (B, 1, T, T) mask, so SDPA's dense-mask path (K/V repeated
for GQA, no causal skipping) is avoided. transformers knows it as `flex_attention`; `setup` registers
vlmft's attention function under that name, which calls FlexAttention with `enable_gqa` for every head
ratio (transformers' own repeats K/V when the head count is not a power of two, as Qwen2.5-7B's 28),
compiled on CUDA (the fused Triton kernel) and eagerly elsewhere, where torch's one warning about running
uncompiled is silenced. transformers' mask builder for plain padded batches runs eagerly off CUDA too.

Available where FlexAttention imports and can back-propagate on this machine's device (torch 2.13 refuses
its backward on CPU, so there it is unavailable and runs fall back to sdpa) and, on CUDA, where Triton
compiles it. `model_obstacle` refuses model families whose transformers class does not accept it.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from functools import cache
from typing import Any

from vlmft_cli.attention import Availability
from vlmft_cli.attention_masks import FLEX_ATTENTION, MASK_IDS_KEY

#: torch's warning when FlexAttention runs uncompiled (expected off CUDA, so silenced there).
UNCOMPILED_WARNING = r"flex_attention called without torch\.compile"


def _on_cuda(device: Any) -> bool:
    import torch

    return torch.device(device).type == "cuda"


@cache
def _compiled_kernel() -> Any:
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _kernel(device: Any) -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return _compiled_kernel() if _on_cuda(device) else flex_attention


def _eager_unless_cuda(device: Any) -> Any:
    """Run `torch.compile`d code eagerly off CUDA (compiling costs ~28 s a shape on a CPU)."""
    import torch

    if _on_cuda(device) or torch.compiler.is_compiling():
        return nullcontext()
    return torch.compiler.set_stance("force_eager")


def flex_attention_forward(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any
) -> tuple[Any, None]:
    """transformers' attention-function signature: (B, H, T, D) query/key/value → ((B, T, H, D), None)."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.flex_attention import flex_attention_forward as transformers_forward

    if MASK_IDS_KEY in kwargs:
        raise RuntimeError(f"the batch still holds {MASK_IDS_KEY!r}: call vlmft_cli.attention_masks.with_block_mask after moving it to the device")
    special = any(kwargs.get(name) is not None for name in ("softcap", "s_aux", "position_bias"))
    if special or not (attention_mask is None or isinstance(attention_mask, BlockMask)):
        with _eager_unless_cuda(query.device):  # score-mod features and dense masks: transformers' own path
            return transformers_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if dropout > 0:
        raise ValueError("flex_attention has no attention dropout; set the model's attention_dropout to 0")
    with _eager_unless_cuda(query.device):
        output = _kernel(query.device)(query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
    return output.transpose(1, 2).contiguous(), None


def flex_attention_mask(*args: Any, device: Any = "cpu", **kwargs: Any) -> Any:
    """transformers' `BlockMask` for a padded (B, T) mask, built eagerly off CUDA."""
    from transformers.masking_utils import flex_attention_mask as transformers_mask

    with _eager_unless_cuda(device):
        return transformers_mask(*args, device=device, **kwargs)


@cache
def _device_problem(device: str) -> str | None:
    """Why FlexAttention cannot train on `device` (forward and backward of a tiny input), or None."""
    import torch

    if device == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is missing or does not support this GPU, so FlexAttention cannot compile"
    kernel = _kernel(device)
    query = torch.randn(1, 2, 128, 16, device=device, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=UNCOMPILED_WARNING)
            kernel(query, query, query).sum().backward()
    except Exception as exc:  # torch raises NotImplementedError on CPU; a GPU it cannot compile for, others
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
        return f"FlexAttention cannot train on {device} with torch {torch.__version__}: {detail}"
    return None


class FlexBackend:
    name = "flex"
    description = "PyTorch FlexAttention: block masks without a dense mask, GQA kept, masked tiles skipped (compiled on CUDA)"
    attn_implementation = FLEX_ATTENTION
    supports_block_mask = True  # a BlockMask from the packing ids (vlmft_cli.attention_masks)

    def availability(self) -> Availability:
        try:
            import torch
            from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
            from transformers.utils import is_torch_flex_attn_available
        except ImportError as exc:
            return Availability.no(f"this PyTorch has no FlexAttention ({exc})")
        if not is_torch_flex_attn_available():
            return Availability.no("transformers does not offer flex_attention with this PyTorch")
        problem = _device_problem("cuda" if torch.cuda.is_available() else "cpu")
        return Availability.no(problem) if problem else Availability.yes()

    def model_obstacle(self, model_backend: Any) -> str | None:
        """Why `model_backend`'s transformers class does not accept flex_attention, or None (also when the
        backend cannot say: loading then decides)."""
        from transformers import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

        try:
            config = model_backend.architecture_config(model_backend.architecture_variants()[0])
            model_class = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)]
        except Exception:
            return None
        if getattr(model_class, "_supports_flex_attn", False):
            return None
        import transformers

        return f"transformers {transformers.__version__}'s {model_class.__name__} does not accept flex_attention"

    def setup(self) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        warnings.filterwarnings("ignore", message=UNCOMPILED_WARNING, category=UserWarning)
        AttentionInterface.register(FLEX_ATTENTION, flex_attention_forward)
        AttentionMaskInterface.register(FLEX_ATTENTION, flex_attention_mask)
