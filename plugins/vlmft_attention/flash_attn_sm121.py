"""FlashAttention 2 built for sm_121 (the DGX Spark's GB10).

PyPI's flash-attn has no sm_121 kernels; users build it with `TORCH_CUDA_ARCH_LIST=12.1`. The reference
run measured it 2% slower than SDPA there, so it is opt-in (`--attention flash-attn-sm121`) and
`vlmft bench attention` compares the two on the machine at hand.
"""

from __future__ import annotations

import importlib.util

from vlmft_cli.attention import Availability

TARGET_CAPABILITY = (12, 1)


def _flash_attn_archs() -> set[str]:
    """The sm_XX architectures flash_attn's CUDA extension was compiled for, as far as torch can tell."""
    import torch

    return {arch for arch in torch.cuda.get_arch_list() if arch.startswith("sm_")}


class FlashAttnSm121Backend:
    name = "flash-attn-sm121"
    description = "FlashAttention 2 compiled for sm_121 (DGX Spark GB10)"
    attn_implementation = "flash_attention_2"
    supports_block_mask = False  # varlen kernels take cu_seqlens, not a dense block mask

    def availability(self) -> Availability:
        if importlib.util.find_spec("flash_attn") is None:
            return Availability.no("flash_attn is not installed (build it for sm_121: TORCH_CUDA_ARCH_LIST=12.1 pip install flash-attn)")
        import torch

        if not torch.cuda.is_available():
            return Availability.no("no CUDA device")
        capability = torch.cuda.get_device_capability()
        if capability != TARGET_CAPABILITY:
            return Availability.no(f"device is sm_{capability[0]}{capability[1]}, this backend is built for sm_121")
        try:
            import flash_attn  # noqa: F401
        except Exception as exc:  # an extension built for another arch fails here
            return Availability.no(f"flash_attn fails to import: {type(exc).__name__}: {exc}")
        if "sm_121" not in _flash_attn_archs() and "sm_120" not in _flash_attn_archs():
            return Availability.no("this PyTorch build does not cover sm_121")
        return Availability.yes()

    def setup(self) -> None:
        pass
