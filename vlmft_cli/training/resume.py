"""Which run and checkpoint a resume continues, and whether there is anything left to train.

- A checkpoint is used only when it passes the same full check as `vlmft ckpt verify` (sha256 of every
  file, safetensors parsed, pickles loaded with `weights_only=True`); any failure skips it with a message
  and the next older one is tried.
- `latest` takes the newest run that is not finished (of one experiment, if given), and says which and why.
- A finished run is left alone. A run whose final checkpoint exists but that was never marked finished
  (killed between the last save and the end) is marked finished, not trained further.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.reporting import Reporter
from vlmft_cli.run_record import RunRecord, RunStatus, read_record, update_record
from vlmft_cli.settings import StoredSettings, load_stored_settings

TRAINER_STATE = "trainer_state.json"


@dataclass(frozen=True)
class ResumeTarget:
    """The run to continue, the checkpoint it continues from, and the settings it stored."""

    run: runs.Run
    checkpoint: runs.Checkpoint
    record: RunRecord
    stored: StoredSettings
    skipped: list[str] = field(default_factory=list)  # newer checkpoints that failed the check, with why


@dataclass(frozen=True)
class NothingToResume:
    """The run is finished (or was just marked so): the message says why nothing is trained."""

    run: runs.Run
    step: int
    checkpoint: Path | None
    message: str


def verified_checkpoint(run: runs.Run, reporter: Reporter) -> tuple[runs.Checkpoint | None, list[str]]:
    """The newest checkpoint of `run` that passes the full check, and the newer ones skipped (with why)."""
    from vlmft_cli.ckpt.verify import verify_checkpoint

    skipped: list[str] = []
    for checkpoint in reversed(run.checkpoints()):
        problem = verify_checkpoint(checkpoint).problem
        if problem is None:
            return checkpoint, skipped
        skipped.append(f"{checkpoint.path.name}: {problem}")
        reporter.warning(f"skipping checkpoint {checkpoint.path}: {problem}")
    return None, skipped


def planned_steps(checkpoint: runs.Checkpoint) -> int | None:
    """The optimizer steps the run was training to when it wrote `checkpoint` (the Trainer's own state)."""
    try:
        value = json.loads((checkpoint.path / TRAINER_STATE).read_text(encoding="utf-8")).get("max_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def locate(out: Path, ref: str, *, experiment: str | None, reporter: Reporter) -> ResumeTarget | NothingToResume:
    """The run and checkpoint `ref` names: `latest`, a checkpoint folder, or a run folder or name."""
    if ref == "latest":
        return _latest(out, experiment, reporter)
    path = Path(ref)
    if runs.CHECKPOINT_PATTERN.match(path.name) and path.is_dir():
        return _given_checkpoint(path)
    run = runs.find_run(out, ref)
    found = _in_run(run, reporter)
    if found is None:
        raise CheckpointError(f"run {run.path} has no checkpoint that passes verification", hint="vlmft ckpt verify shows why; start a new run with vlmft train")
    return found


def _latest(out: Path, experiment: str | None, reporter: Reporter) -> ResumeTarget | NothingToResume:
    candidates = runs.list_runs(out, experiment=experiment)
    scope = f" of experiment {experiment!r}" if experiment else ""
    unfinished = [run for run in candidates if read_record(run.path).status != RunStatus.FINISHED.value]
    if not unfinished:
        detail = f"all {len(candidates)} runs{scope} there are finished" if candidates else f"there is no run{scope}"
        raise CheckpointError(f"nothing to resume under {out}: {detail}", hint="start a new run with vlmft train")
    for run in reversed(unfinished):
        found = _in_run(run, reporter)
        if found is None:
            reporter.warning(f"run {run.name} has no checkpoint that passes verification; looking at older runs")
            continue
        record = read_record(run.path)
        why = f": {record.stop_reason or record.error}" if record.stop_reason or record.error else ""
        reporter.info(f"Resuming run {run.name}, the newest run{scope} that is not finished (status {record.status}{why})")
        return found
    raise CheckpointError(f"no unfinished run{scope} under {out} has a checkpoint that passes verification")


def _given_checkpoint(path: Path) -> ResumeTarget | NothingToResume:
    from vlmft_cli.ckpt.verify import checkpoint_at, verify_checkpoint

    checkpoint = checkpoint_at(path)
    problem = verify_checkpoint(checkpoint).problem
    if problem:
        raise CheckpointError(f"checkpoint {path} cannot be resumed: {problem}", hint="vlmft ckpt verify shows every check; resume the run instead to use its newest good checkpoint")
    return _target(runs.Run(checkpoint.run_dir), checkpoint, [])


def _in_run(run: runs.Run, reporter: Reporter) -> ResumeTarget | NothingToResume | None:
    """What resuming `run` means; None when no checkpoint of it passes verification."""
    if read_record(run.path).status == RunStatus.FINISHED.value:
        return _finished(run)
    checkpoint, skipped = verified_checkpoint(run, reporter)
    return None if checkpoint is None else _target(run, checkpoint, skipped)


def _finished(run: runs.Run) -> NothingToResume:
    record = read_record(run.path)
    newest = run.good_checkpoints()
    step = record.global_step if record.global_step is not None else (newest[-1].step if newest else 0)
    return NothingToResume(run, step, newest[-1].path if newest else None, f"run {run.name} is finished (step {step}); nothing to resume. Start a new run to train further")


def _target(run: runs.Run, checkpoint: runs.Checkpoint, skipped: list[str]) -> ResumeTarget | NothingToResume:
    record = read_record(run.path)
    if record.status == RunStatus.FINISHED.value:
        return _finished(run)
    final = planned_steps(checkpoint)
    if final is not None and checkpoint.step >= final:
        return _mark_finished(run, checkpoint)
    return ResumeTarget(run, checkpoint, record, _stored(run), skipped)


def _stored(run: runs.Run) -> StoredSettings:
    return load_stored_settings(run.path / runs.CONFIG_FILE, origin=f"run {run.name}")


def _mark_finished(run: runs.Run, checkpoint: runs.Checkpoint) -> NothingToResume:
    from vlmft_cli.run_lock import run_lock

    with run_lock(run.path, command="resume (marking finished)"):
        update_record(run.path, status=RunStatus.FINISHED.value, global_step=checkpoint.step, finished=runs.utc_now(), updated=runs.utc_now())
    message = (
        f"run {run.name} wrote its final checkpoint (step {checkpoint.step}) but was never marked finished; "
        "marked finished now, nothing trained"
    )
    return NothingToResume(run, checkpoint.step, checkpoint.path, message)
