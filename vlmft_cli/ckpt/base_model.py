"""Which base model a checkpoint's adapter belongs to, and the backend that loads it.

Sources, in order: run.json's `base_model` (the resolved local folder or hub id training loaded), its
`model` (the name the user gave, which the backend can resolve again, rebuilding a tiny model offline),
then `adapter_config.json`'s `base_model_name_or_path`. A local folder that no longer exists is passed
over for the next source. The backend is run.json's `backend` when recorded, else the one that claims
the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli.backends import backend_for
from vlmft_cli.errors import CheckpointError
from vlmft_cli.model_backend import ModelBackend
from vlmft_cli.runs import Checkpoint, Run

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class BaseModel:
    """The base model to load (`name`, for the backend), how the user named it, and its backend."""

    name: str
    given_name: str
    backend: ModelBackend


def adapter_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's adapter_config.json as a dict."""
    path = checkpoint.path / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return data


def _is_missing_local_path(name: str) -> bool:
    path = Path(name).expanduser()
    if path.exists():
        return False
    return path.is_absolute() or name.startswith(("./", "../", "~"))


def base_model_for(checkpoint: Checkpoint) -> BaseModel:
    """The base model of `checkpoint`'s run (see the module docstring for the order of sources)."""
    record = Run(checkpoint.run_dir).record()
    recorded = [record.base_model, record.model, adapter_config(checkpoint).get("base_model_name_or_path")]
    candidates = [str(c) for c in recorded if isinstance(c, str) and c.strip()]
    if not candidates:
        raise CheckpointError(
            f"cannot tell the base model of {checkpoint.path}: run.json has no model or base_model and "
            f"{ADAPTER_CONFIG} no base_model_name_or_path"
        )
    usable = [c for c in candidates if not _is_missing_local_path(c)]
    if not usable:
        raise CheckpointError(f"the base model of {checkpoint.path} is gone: {', '.join(dict.fromkeys(candidates))} not found")
    return BaseModel(name=usable[0], given_name=record.model or usable[0], backend=backend_for(usable[0], record.backend))
