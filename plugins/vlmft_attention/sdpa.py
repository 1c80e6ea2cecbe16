"""PyTorch scaled-dot-product attention: the default everywhere, and the fallback."""

from __future__ import annotations

from vlmft_cli.attention import Availability


class SdpaBackend:
    name = "sdpa"
    description = "torch.nn.functional.scaled_dot_product_attention (fused kernels where PyTorch has them)"
    attn_implementation = "sdpa"
    supports_block_mask = True

    def availability(self) -> Availability:
        import torch.nn.functional as F

        if not hasattr(F, "scaled_dot_product_attention"):
            return Availability.no("this PyTorch has no scaled_dot_product_attention")
        return Availability.yes()

    def setup(self) -> None:
        pass
