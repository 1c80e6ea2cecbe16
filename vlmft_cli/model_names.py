"""Cheap name helpers model backends share: a local folder's `model_type`, and the LoRA module regex.

Both run while plugins are listed or a backend is chosen, so nothing heavy is imported here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path


def local_model_type(path: Path) -> str | None:
    """`model_type` from a folder's config.json, or None when there is none readable."""
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def language_model_lora_pattern(projections: Sequence[str]) -> str:
    """Full-match regex for PEFT selecting `projections` under a `language_model` module only.

    Vision towers reuse the same layer names (`q_proj`, and in Qwen2.5-VL `gate_proj`/`up_proj`/
    `down_proj`), so bare names would adapt them too; anchoring on `language_model.` keeps LoRA on the
    language model of every native transformers VLM that names its text model so.
    """
    if not projections:
        raise ValueError("at least one projection is needed")
    for projection in projections:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", projection):
            raise ValueError(f"not a module name: {projection!r}")
    alternatives = "|".join(re.escape(projection) for projection in projections)
    return rf"^(?:.*\.)?language_model\.(?:.*\.)?(?:{alternatives})$"
