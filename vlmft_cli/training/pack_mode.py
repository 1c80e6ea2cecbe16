"""Whether a run packs: the `pack` setting checked against what the model and attention backends honour.

Shared-prefix packing is only correct when the attention honours the caller-built block mask; otherwise
later QAs would silently see earlier ones. So when the model backend lacks the `SharedPrefixPacking`
methods, or the attention backend or the model backend says the mask is not honoured, an explicit
`--pack shared-prefix` is refused with the reason, and the stage default falls back to `none` with a
warning.
"""

from __future__ import annotations

from typing import Any, Literal

from vlmft_cli.errors import ConfigError
from vlmft_cli.reporting import Reporter

PackMode = Literal["none", "shared-prefix"]

#: The optional backend methods packing needs (`vlmft_cli.model_backend.SharedPrefixPacking`).
PACKING_METHODS = ("supports_block_mask", "packed_prefix_length", "encode_packed", "collate_packed")


def packing_obstacle(stage: int, backend: Any, attention: Any) -> str | None:
    """Why shared-prefix packing cannot run with this stage, model backend and attention backend, or None."""
    if stage != 1:
        return "shared-prefix packing is for stage 1 (a stage-2 sample is already one whole conversation)"
    backend_name = getattr(backend, "name", type(backend).__name__)
    if not getattr(attention, "supports_block_mask", False):
        return f"attention backend {attention.name} ({attention.attn_implementation}) does not honour a caller-built block attention mask"
    declares = getattr(backend, "supports_block_mask", None)
    if callable(declares) and not declares(attention.attn_implementation):
        return f"model backend {backend_name} cannot apply a block attention mask with attn_implementation {attention.attn_implementation!r}"
    missing = [method for method in PACKING_METHODS if not callable(getattr(backend, method, None))]
    if missing:
        return f"model backend {backend_name} does not implement shared-prefix packing (it lacks {', '.join(missing)})"
    return None


def resolve_pack(requested: PackMode, *, stage: int, backend: Any, attention: Any, explicit: bool, reporter: Reporter) -> tuple[PackMode, str | None]:
    """(the mode this run uses, why packing was dropped or None). `explicit`: the user chose the value
    (or a resumed run trained with it), rather than the stage default."""
    if requested == "none":
        return "none", None
    obstacle = packing_obstacle(stage, backend, attention)
    if obstacle is None:
        return "shared-prefix", None
    if explicit:
        raise ConfigError(f"cannot train with --pack shared-prefix: {obstacle}", hint="pass --pack none to train one QA per sample")
    reporter.warning(f"{obstacle}; training one QA per sample (--pack none) instead of packing")
    return "none", obstacle
