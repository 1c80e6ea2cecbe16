"""transformers' eager attention: plain matmuls, slow, the reference for correctness checks."""

from __future__ import annotations

from vlmft_cli.attention import Availability


class EagerBackend:
    name = "eager"
    description = "transformers' eager attention (matmul + softmax): slow, exact reference"
    attn_implementation = "eager"
    supports_block_mask = True

    def availability(self) -> Availability:
        return Availability.yes()

    def setup(self) -> None:
        pass
