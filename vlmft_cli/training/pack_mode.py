"""Whether a run packs: the `pack` setting checked against what the model and attention backends honour.

Shared-prefix packing is only correct when the attention honours the caller-built block mask; otherwise
later QAs would silently see earlier ones. So when the model backend lacks the `SharedPrefixPacking`
methods, or the attention backend or the model backend says the mask is not honoured (the check:
`pipeline.packing.packing_obstacle`), an explicit `--pack shared-prefix` is refused with the reason, and
the stage default falls back to `none` with a warning.
"""

from __future__ import annotations

from typing import Any, Literal

from vlmft_cli.errors import ConfigError
from vlmft_cli.pipeline.packing import packing_obstacle
from vlmft_cli.reporting import Reporter

PackMode = Literal["none", "shared-prefix"]


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
