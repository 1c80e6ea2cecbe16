"""`run.json`: the typed record of one run — what it is, where it came from, how it went.

This module alone reads and writes the file. Every field is optional so that records written by older
versions (or by hand in tests) still load; `schema_version` says which layout wrote it. Unknown keys are
kept on rewrite (a newer vlmft may have added them) but are not part of the typed view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlmft_cli.errors import CheckpointError
from vlmft_cli.settings import SettingEnum

RUN_FILE = "run.json"
SCHEMA_VERSION = 2


class RunStatus(SettingEnum):
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    UNKNOWN = "unknown"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", use_enum_values=True)


class Parent(_Part):
    """The stage-1 checkpoint a stage-2 run started from."""

    run: str
    run_path: str
    checkpoint: str
    step: int


class PackInfo(_Part):
    mode: str = "none"
    accumulation: int | None = None  # micro-batches per optimizer step and device when the run started
    dropped: str | None = None  # why packing was dropped, when it was only the default
    mean_qas_per_video: float | None = None


class DataFile(_Part):
    path: str
    sha256: str
    lines: int | None = None


class DataInfo(_Part):
    dir: str
    files: dict[str, DataFile] = Field(default_factory=dict)


class Resumption(_Part):
    """One resume: from which checkpoint, with what applied, and what was accepted knowingly."""

    step: int
    at: str
    processes: int = 1
    checkpoint: str | None = None
    applied: dict[str, list[Any]] = Field(default_factory=dict)  # key: [old, new]
    forced: dict[str, list[Any]] = Field(default_factory=dict)  # key: [old, new], with --force-new-settings
    skipped: list[str] = Field(default_factory=list)  # newer checkpoints that failed verification


class RunRecord(_Part):
    schema_version: int = SCHEMA_VERSION
    name: str | None = None
    stage: int | None = None
    status: RunStatus = RunStatus.UNKNOWN
    created: str | None = None
    updated: str | None = None
    finished: str | None = None
    model: str | None = None
    backend: str | None = None
    base_model: str | None = None
    attention: str | None = None
    profile: str | None = None
    parent: Parent | None = None
    pack: PackInfo | None = None
    gradient_checkpointing: dict[str, Any] | None = None  # the plan's choice: asked, value (on/off), reason
    data: DataInfo | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)
    resumed: list[Resumption] = Field(default_factory=list)
    stop_reason: str | None = None
    error: str | None = None
    global_step: int | None = None
    median_step_time_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _raw(run_dir: Path) -> dict[str, Any]:
    try:
        raw = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def read_record(run_dir: Path) -> RunRecord:
    """The record of the run in `run_dir`: empty if the file is missing or unreadable; a top-level value
    of the wrong type is left out of the typed view (listing many runs never fails on one bad file)."""
    raw = _raw(run_dir)
    while True:
        try:
            return RunRecord.model_validate(raw)
        except ValidationError as exc:
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            if not bad:
                return RunRecord()
            raw = {key: value for key, value in raw.items() if key not in bad}


def write_record(run_dir: Path, record: RunRecord) -> RunRecord:
    """Write the whole record atomically (a reader never sees half of it); keys this version does not
    know are kept."""
    from vlmft_cli.fsutil import atomic_write_json

    unknown = {key: value for key, value in _raw(run_dir).items() if key not in RunRecord.model_fields}
    atomic_write_json(run_dir / RUN_FILE, {**unknown, **record.to_json()})
    return record


def update_record(run_dir: Path, **changes: Any) -> RunRecord:
    """Change the given fields (validated) and write the record back."""
    try:
        updated = RunRecord.model_validate({**read_record(run_dir).to_json(), **{key: _plain(value) for key, value in changes.items()}})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CheckpointError(f"{run_dir / RUN_FILE}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return write_record(run_dir, updated)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
