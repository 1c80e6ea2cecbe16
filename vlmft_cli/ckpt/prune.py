"""Pruning checkpoints: per run keep the newest N complete ones plus the best, remove the rest.

Removed too: incomplete checkpoint folders (no valid marker) and `checkpoints/.staging` leftovers, except
in runs whose run.json says `running`, where they may be a write in progress. The newest complete
checkpoint is never removed, whatever N is. A folder's marker is deleted first, so a removal cut short
leaves an incomplete folder (which the next prune removes), never one that looks complete.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.ckpt.listing import tree_size
from vlmft_cli.errors import CheckpointError
from vlmft_cli.reporting import NullReporter
from vlmft_cli.runs import MARKER_FILE, STAGING_DIR, Run, best_checkpoint, list_runs

RUNNING = "running"


@dataclass(frozen=True)
class Removal:
    """A folder pruning removes (or would remove, in a dry run), and why."""

    path: Path
    step: int | None
    size_bytes: int
    reason: str


@dataclass
class RunPrune:
    """The plan for one run: steps kept and folders removed."""

    run: Run
    kept: list[int] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)


@dataclass
class PruneResult:
    runs: list[RunPrune]
    dry_run: bool

    @property
    def removed(self) -> list[Removal]:
        return [removal for run in self.runs for removal in run.removed]

    @property
    def freed_bytes(self) -> int:
        return sum(removal.size_bytes for removal in self.removed)


def plan_run(run: Run, keep: int, *, reporter: Any = None) -> RunPrune:
    """What pruning `run` to the newest `keep` complete checkpoints plus the best would do."""
    if keep < 0:
        raise CheckpointError(f"--keep must be 0 or more, not {keep}")
    reporter = reporter or NullReporter()
    checkpoints = run.checkpoints()
    problems = {c.step: c.problem() for c in checkpoints}
    complete = [c for c in checkpoints if problems[c.step] is None]
    best = best_checkpoint(complete)
    kept = {c.step for c in complete[-keep:]} if keep else set()
    if complete:
        kept.add(complete[-1].step)  # never the newest complete checkpoint
    if best is not None:
        kept.add(best.step)
    plan = RunPrune(run, kept=sorted(kept))
    for checkpoint in complete:
        if checkpoint.step not in kept:
            plan.removed.append(Removal(checkpoint.path, checkpoint.step, tree_size(checkpoint.path), f"not among the newest {keep} complete nor the best"))
    incomplete = [c for c in checkpoints if problems[c.step] is not None]
    staging = run.checkpoints_dir / STAGING_DIR
    if run.status == RUNNING and (incomplete or staging.exists()):
        reporter.warning(f"run {run.name} is marked running: its incomplete checkpoints are left alone")
        return plan
    for checkpoint in incomplete:
        plan.removed.append(Removal(checkpoint.path, checkpoint.step, tree_size(checkpoint.path), f"incomplete: {problems[checkpoint.step]}"))
    if staging.exists():
        plan.removed.append(Removal(staging, None, tree_size(staging), "unfinished checkpoint write"))
    return plan


def remove_folder(path: Path) -> None:
    """Delete a checkpoint folder, its completion marker first."""
    (path / MARKER_FILE).unlink(missing_ok=True)
    shutil.rmtree(path)


def prune_runs(out: Path, keep: int, *, experiment: str | None = None, dry_run: bool = False, reporter: Any = None) -> PruneResult:
    """Prune every run under `out` (or one experiment's runs); a dry run only plans."""
    reporter = reporter or NullReporter()
    runs = list_runs(out, experiment=experiment)
    if not runs:
        scope = f" for experiment {experiment!r}" if experiment else ""
        raise CheckpointError(f"no runs under {out}{scope}")
    result = PruneResult([plan_run(run, keep, reporter=reporter) for run in runs], dry_run)
    if not dry_run:
        for removal in result.removed:
            remove_folder(removal.path)
    return result
