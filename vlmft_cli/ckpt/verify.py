"""Deep verification of checkpoints: marker, sizes, sha256, safetensors, JSON and tensor-only pickles.

`verify_checkpoint` never raises for a damaged checkpoint: it returns a `Verification` naming the first
problem and listing what passed. Pickled files are opened only with `torch.load(weights_only=True)`
(tensors and plain containers; numpy arrays are allowed in RNG state, as transformers' Trainer writes
them); `training_args.bin`, a pickled Python object, has its hash checked and is never unpickled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.errors import CheckpointError
from vlmft_cli.fsutil import sha256_file
from vlmft_cli.runs import CHECKPOINT_PATTERN, MARKER_FILE, Checkpoint, find_run, latest_checkpoint

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OPTIMIZER_STATE = "optimizer.pt"
SCHEDULER_STATE = "scheduler.pt"
#: Files every training checkpoint needs: the adapter to use it, optimizer and scheduler to resume it.
REQUIRED_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, OPTIMIZER_STATE, SCHEDULER_STATE)
#: Pickled Python objects that are checked by hash only, never unpickled.
NOT_UNPICKLED = frozenset({"training_args.bin"})
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
RNG_STATE_PATTERN = re.compile(r"^rng_state(_\d+)?\.pth$")


class _Failed(Exception):
    """The first problem found; becomes `Verification.problem`."""


@dataclass
class Verification:
    """The outcome of verifying one checkpoint: what passed, the problem (None when sound), and notes."""

    checkpoint: Checkpoint
    checks: list[str] = field(default_factory=list)
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def checkpoint_at(path: Path) -> Checkpoint:
    """The checkpoint in folder `path`: step from a `checkpoint-N` name, else from its marker."""
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder")
    match = CHECKPOINT_PATTERN.match(path.name)
    if match:
        return Checkpoint(path, int(match.group(1)))
    step = (Checkpoint(path, -1).marker() or {}).get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        return Checkpoint(path, step)
    raise CheckpointError(f"{path} is not a checkpoint folder (no checkpoint-N name and no readable {MARKER_FILE})")


def checkpoints_to_verify(out: Path, ref: str, *, reporter: Any = None) -> list[Checkpoint]:
    """`latest` (the newest complete checkpoint), a checkpoint folder, or every checkpoint of a run."""
    if ref == "latest":
        return [latest_checkpoint(out, reporter=reporter)]
    path = Path(ref)
    if path.is_dir() and (CHECKPOINT_PATTERN.match(path.name) or (path / MARKER_FILE).is_file()):
        return [checkpoint_at(path)]
    run = find_run(out, ref)
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise CheckpointError(f"run {run.path} has no checkpoints")
    return checkpoints


def verify_checkpoint(checkpoint: Checkpoint) -> Verification:
    """Check everything that can be checked without loading a model; stop at the first problem."""
    result = Verification(checkpoint)
    try:
        files = _check_marker(checkpoint, result)
        _check_files(checkpoint, files, result)
        _check_required(files, result)
        _check_safetensors(checkpoint, files, result)
        _check_json(checkpoint, files, result)
        _check_pickles(checkpoint, files, result)
    except _Failed as failure:
        result.problem = str(failure)
    except OSError as exc:
        result.problem = f"cannot read {exc.filename or checkpoint.path}: {exc.strerror or exc}"
    return result


def _check_marker(checkpoint: Checkpoint, result: Verification) -> dict[str, dict[str, Any]]:
    marker_path = checkpoint.marker_path
    if not marker_path.is_file():
        raise _Failed(f"no completion marker ({MARKER_FILE}): the checkpoint was never finished")
    marker = checkpoint.marker()
    if marker is None:
        raise _Failed(f"{MARKER_FILE} is not a readable JSON object")
    if marker.get("step") != checkpoint.step:
        raise _Failed(f"{MARKER_FILE} says step {marker.get('step')!r} but the folder is step {checkpoint.step}")
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        raise _Failed(f"{MARKER_FILE} lists no files")
    for name, meta in files.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("size"), int) or not isinstance(meta.get("sha256"), str):
            raise _Failed(f"{MARKER_FILE} has no size and sha256 for {name}")
        if Path(name).name != name:
            raise _Failed(f"{MARKER_FILE} lists {name!r}, which is not a file in the checkpoint folder")
    result.checks.append(f"marker {MARKER_FILE}: step {checkpoint.step}, {len(files)} files")
    return files


def _check_files(checkpoint: Checkpoint, files: dict[str, dict[str, Any]], result: Verification) -> None:
    total = 0
    for name, meta in files.items():
        path = checkpoint.path / name
        if not path.is_file():
            raise _Failed(f"{name} is listed in the marker but missing")
        size = path.stat().st_size
        if size != meta["size"]:
            raise _Failed(f"{name} has {size} bytes, the marker says {meta['size']} (truncated or rewritten)")
        if sha256_file(path) != meta["sha256"]:
            raise _Failed(f"{name} does not match its sha256 in the marker (corrupted or rewritten)")
        total += size
    result.checks.append(f"sizes and sha256 of {len(files)} files ({total} bytes)")
    extra = sorted(
        p.name for p in checkpoint.path.iterdir() if p.name not in files and p.name != MARKER_FILE and not p.name.startswith(".")
    )
    if extra:
        result.notes.append(f"not covered by the marker (written after it?): {', '.join(extra)}")


def _check_required(files: dict[str, dict[str, Any]], result: Verification) -> None:
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise _Failed(f"{', '.join(missing)} missing: a checkpoint needs {', '.join(REQUIRED_FILES)}")
    result.checks.append(f"required files present: {', '.join(REQUIRED_FILES)}")


def _check_safetensors(checkpoint: Checkpoint, files: dict[str, dict[str, Any]], result: Verification) -> None:
    from safetensors import safe_open

    for name in sorted(n for n in files if n.endswith(".safetensors")):
        try:
            with safe_open(str(checkpoint.path / name), framework="pt") as handle:
                keys = list(handle.keys())
                for key in keys:
                    handle.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types for every kind of damage
            raise _Failed(f"{name} is not a readable safetensors file: {_first_line(exc)}") from None
        if not keys:
            raise _Failed(f"{name} holds no tensors")
        result.checks.append(f"{name}: {len(keys)} tensors parsed")


def _check_json(checkpoint: Checkpoint, files: dict[str, dict[str, Any]], result: Verification) -> None:
    for name in sorted(n for n in files if n.endswith(".json")):
        try:
            data = json.loads((checkpoint.path / name).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Failed(f"{name} is not valid JSON: {_first_line(exc)}") from None
        if name == ADAPTER_CONFIG and not (isinstance(data, dict) and data.get("peft_type")):
            raise _Failed(f"{ADAPTER_CONFIG} is not a PEFT adapter config (no peft_type)")
        result.checks.append(f"{name}: valid JSON")


def _check_pickles(checkpoint: Checkpoint, files: dict[str, dict[str, Any]], result: Verification) -> None:
    for name in sorted(n for n in files if n.endswith(PICKLE_SUFFIXES)):
        if name in NOT_UNPICKLED:
            result.notes.append(f"{name}: hash checked, not unpickled (a pickled Python object)")
            continue
        state = _load_tensors_only(checkpoint.path / name, allow_numpy=bool(RNG_STATE_PATTERN.match(name)))
        if name == OPTIMIZER_STATE and not (isinstance(state, dict) and {"state", "param_groups"} <= state.keys()):
            raise _Failed(f"{name} is not an optimizer state_dict (no state/param_groups)")
        if name == SCHEDULER_STATE and not isinstance(state, dict):
            raise _Failed(f"{name} is not a scheduler state_dict")
        result.checks.append(f"{name}: loads with weights_only=True")


def _load_tensors_only(path: Path, *, allow_numpy: bool) -> Any:
    import torch

    try:
        if allow_numpy:
            from transformers.trainer_pt_utils import safe_globals

            with safe_globals():
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError… all mean "not loadable safely"
        raise _Failed(f"{path.name} does not load with torch.load(weights_only=True): {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
