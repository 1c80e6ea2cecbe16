"""What is on disk under an experiments folder: runs, their checkpoints, sizes, eval losses and problems.

A checkpoint is complete when `Checkpoint.problem()` finds nothing wrong (its marker is present and the
files it lists exist with the recorded sizes); the best one has the lowest `eval_loss` recorded in a
complete checkpoint's marker. A `checkpoints/.staging` folder is reported as an unfinished write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.runs import STAGING_DIR, Run, best_checkpoint, list_runs

STAGING_PROBLEM = "unfinished checkpoint write (staging folder)"


def tree_size(path: Path) -> int:
    """Bytes of all regular files under `path` (symlinks not followed); 0 when it is gone."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for file in path.rglob("*"):
        try:
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
        except OSError:
            continue
    return total


@dataclass
class CheckpointSummary:
    """One checkpoint folder (or a staging leftover, with `step` None)."""

    path: Path
    step: int | None
    stage: int | None
    eval_loss: float | None
    size_bytes: int
    problem: str | None
    best: bool = False

    @property
    def complete(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "step": self.step,
            "stage": self.stage,
            "eval_loss": self.eval_loss,
            "size_bytes": self.size_bytes,
            "complete": self.complete,
            "best": self.best,
            "problem": self.problem,
        }


@dataclass
class RunSummary:
    """One run with its status from run.json and every checkpoint folder, oldest step first."""

    name: str
    path: Path
    stage: int | None
    status: str
    model: str | None
    checkpoints: list[CheckpointSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.name,
            "path": str(self.path),
            "stage": self.stage,
            "status": self.status,
            "model": self.model,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
        }


def _relative_problem(problem: str | None, folder: Path) -> str | None:
    """The problem without the folder's own path, which the summary already carries."""
    if problem is None:
        return None
    return problem.replace(f" in {folder}", "").replace(f"{folder}/", "")


def summarize_run(run: Run) -> RunSummary:
    record = run.record()
    summary = RunSummary(run.name, run.path, record.stage, str(record.status), record.model)
    checkpoints = run.checkpoints()
    problems = {c.step: _relative_problem(c.problem(), c.path) for c in checkpoints}
    best = best_checkpoint([c for c in checkpoints if problems[c.step] is None])
    for checkpoint in checkpoints:
        marker_stage = (checkpoint.marker() or {}).get("stage")
        summary.checkpoints.append(
            CheckpointSummary(
                path=checkpoint.path,
                step=checkpoint.step,
                stage=marker_stage if isinstance(marker_stage, int) else record.stage,
                eval_loss=checkpoint.eval_loss,
                size_bytes=tree_size(checkpoint.path),
                problem=problems[checkpoint.step],
                best=best is not None and checkpoint.step == best.step,
            )
        )
    staging = run.checkpoints_dir / STAGING_DIR
    if staging.exists():
        summary.checkpoints.append(CheckpointSummary(staging, None, record.stage, None, tree_size(staging), STAGING_PROBLEM))
    return summary


def summarize_runs(out: Path, *, experiment: str | None = None) -> list[RunSummary]:
    """Every run under `out` (optionally one experiment's), oldest first, with its checkpoints."""
    return [summarize_run(run) for run in list_runs(out, experiment=experiment)]
