"""The one way to find runs and checkpoints on disk (their small files are written with `vlmft_cli.fsutil`).

Layout of an experiments folder (`--out`, default `experiments`, env `VLMFT_OUT`):

    {out}/{name}_{YYYYmmdd-HHMMSS}/          a run
        config.yaml                          effective settings with their sources
        run.json                             lineage and status (running, finished, failed, interrupted)
        logs/training.log, logs/train_metrics.csv, logs/eval_metrics.csv
        checkpoints/checkpoint-{step}/       one checkpoint (adapter + optimizer/scheduler/RNG/trainer state)
            vlmft_checkpoint.json            the completion marker: step, files with sizes and sha256
        checkpoints/.staging/                where a checkpoint is written before it is renamed into place

A checkpoint counts only when its folder carries a marker whose files all exist with the recorded
sizes (`verify_checkpoint` also checks hashes and that safetensors parse).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlmft_cli.errors import CheckpointError
from vlmft_cli.fsutil import atomic_write_json, sha256_file
from vlmft_cli.run_record import RUN_FILE, RunRecord, read_record, update_record

CONFIG_FILE = "config.yaml"
MARKER_FILE = "vlmft_checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
STAGING_DIR = ".staging"
LOGS_DIR = "logs"
TRAINING_LOG = "training.log"
TRAIN_METRICS = "train_metrics.csv"
EVAL_METRICS = "eval_metrics.csv"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def marker_path(self) -> Path:
        return self.path / MARKER_FILE

    def marker(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.marker_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @property
    def eval_loss(self) -> float | None:
        """The `eval_loss` its marker records, when it is a finite number."""
        value = (self.marker() or {}).get("eval_loss")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None

    def problem(self, *, deep: bool = False) -> str | None:
        """Why this checkpoint cannot be used, or None. `deep` also checks hashes and safetensors."""
        marker = self.marker()
        if marker is None:
            return f"no completion marker ({MARKER_FILE}) in {self.path}"
        files = marker.get("files")
        if not isinstance(files, dict) or not files:
            return f"completion marker in {self.path} lists no files"
        for name, meta in files.items():
            file = self.path / name
            if not file.is_file():
                return f"{file} is missing"
            if file.stat().st_size != meta.get("size"):
                return f"{file} has {file.stat().st_size} bytes, the marker says {meta.get('size')}"
            if deep and sha256_file(file) != meta.get("sha256"):
                return f"{file} does not match its recorded sha256"
        if deep:
            for name in files:
                if name.endswith(".safetensors"):
                    try:
                        from safetensors import safe_open

                        with safe_open(str(self.path / name), framework="pt") as handle:
                            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                                handle.get_slice(key)
                    except Exception as exc:
                        return f"{self.path / name} is not a readable safetensors file: {exc}"
        return None


def write_marker(checkpoint_dir: Path, step: int, extra: dict[str, Any] | None = None) -> None:
    """Record every file of a finished checkpoint (size, sha256); written last, atomically."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(checkpoint_dir.iterdir())
        if p.is_file() and p.name != MARKER_FILE and not p.name.startswith(".")
    }
    atomic_write_json(checkpoint_dir / MARKER_FILE, {"step": step, "complete": True, "created": utc_now(), "files": files, **(extra or {})})


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    def record(self) -> RunRecord:
        """Its run.json, typed (`vlmft_cli.run_record`)."""
        return read_record(self.path)

    def update_record(self, **changes: Any) -> RunRecord:
        return update_record(self.path, **changes)

    @property
    def stage(self) -> int | None:
        return self.record().stage

    @property
    def status(self) -> str:
        return str(self.record().status)

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint folder, complete or not, oldest step first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for child in self.checkpoints_dir.iterdir():
            match = CHECKPOINT_PATTERN.match(child.name)
            if match and child.is_dir():
                found.append(Checkpoint(child, int(match.group(1))))
        return sorted(found, key=lambda c: c.step)

    def good_checkpoints(self) -> list[Checkpoint]:
        return [c for c in self.checkpoints() if c.problem() is None]


def new_run_dir(out: Path, name: str) -> Path:
    if not RUN_NAME_PATTERN.match(name):
        raise CheckpointError(f"experiment name {name!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"{name}_{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = out / f"{name}_{stamp}-{suffix}"
    (path / CHECKPOINTS_DIR).mkdir(parents=True)
    (path / LOGS_DIR).mkdir()
    return path


def list_runs(out: Path, *, experiment: str | None = None, stage: int | None = None) -> list[Run]:
    """Runs under `out`, oldest first (by creation time recorded in run.json, then name)."""
    if not out.is_dir():
        return []
    runs = []
    for child in out.iterdir():
        if not (child / RUN_FILE).is_file():
            continue
        run = Run(child)
        if experiment is not None and not (run.name == experiment or run.name.rsplit("_", 1)[0] == experiment):
            continue
        if stage is not None and run.stage != stage:
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: (r.record().created or "", r.name))


def find_run(out: Path, name_or_path: str) -> Run:
    """A run by folder path, by full name under `out`, or the newest run of an experiment name."""
    as_path = Path(name_or_path)
    if (as_path / RUN_FILE).is_file():
        return Run(as_path)
    runs = list_runs(out, experiment=name_or_path)
    if not runs:
        raise CheckpointError(f"no run {name_or_path!r} under {out}")
    return runs[-1]


def latest_checkpoint(out: Path, *, experiment: str | None = None, stage: int | None = None, reporter: Any = None) -> Checkpoint:
    """The newest complete checkpoint of the newest run that has one; broken ones are skipped aloud."""
    runs = list_runs(out, experiment=experiment, stage=stage)
    for run in reversed(runs):
        for checkpoint in reversed(run.checkpoints()):
            problem = checkpoint.problem()
            if problem is None:
                return checkpoint
            if reporter is not None:
                reporter.warning(f"skipping checkpoint {checkpoint.path}: {problem}")
    scope = f" for experiment {experiment!r}" if experiment else ""
    raise CheckpointError(f"no complete checkpoint under {out}{scope}")


def resolve_checkpoint(out: Path, ref: str, *, reporter: Any = None) -> Checkpoint:
    """`latest`, a checkpoint folder, or a run folder/name (its newest complete checkpoint)."""
    if ref == "latest":
        return latest_checkpoint(out, reporter=reporter)
    path = Path(ref)
    match = CHECKPOINT_PATTERN.match(path.name)
    if match and path.is_dir():
        checkpoint = Checkpoint(path, int(match.group(1)))
        problem = checkpoint.problem()
        if problem:
            raise CheckpointError(f"checkpoint {path} is not usable: {problem}")
        return checkpoint
    run = find_run(out, ref)
    good = run.good_checkpoints()
    if not good:
        raise CheckpointError(f"run {run.path} has no complete checkpoint")
    return good[-1]



def best_checkpoint(complete: list[Checkpoint]) -> Checkpoint | None:
    """The checkpoint with the lowest recorded eval loss (the newer one on a tie), if any has one."""
    scored = [(loss, -c.step, c) for c in complete if (loss := c.eval_loss) is not None]
    return min(scored, key=lambda item: item[:2])[2] if scored else None
