"""The training recipe: one curriculum stage, as a new run or a resumed one, in phases that read top to
bottom. `train()` is the Python API behind `vlmft train` and `vlmft ckpt resume`.

    plan       one settings resolver (a resume puts the run's stored settings under the flags given now),
               both data splits through the shared pipeline, the step plan         training/plan.py
    reconcile  resume only: the newest checkpoint that passes verification, then settings and data
               compared key by key: safe changes applied, different-run ones refused   resume.py, reconcile.py
    setup      model with its adapter, datasets, Trainer and callbacks              session.py
    train      the Trainer's loop; a signal or the memory cap stops it with a checkpoint, OOM saves what
               it can and names the knobs
    finish     the run record and the message

A dry run stops after the plan (and, resuming, after the reconcile) and trains nothing. One process at a
time trains a run: rank 0 holds the run's lock from creation (or reopening) to the end.

Features and the settings that control them are described field by field in `vlmft_cli.settings`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from vlmft_cli import runs
from vlmft_cli.errors import DataError, VlmftError
from vlmft_cli.reporting import NullReporter, Reporter
from vlmft_cli.run_record import PackInfo, Resumption, RunStatus, read_record, update_record, write_record
from vlmft_cli.settings import ResolvedSettings, Settings
from vlmft_cli.training import distributed
from vlmft_cli.training.plan import Plan, plan_run
from vlmft_cli.training.reconcile import Reconciliation, check_data, reconcile
from vlmft_cli.training.request import StopKind, TrainRequest, TrainResult
from vlmft_cli.training.resume import NothingToResume, ResumeTarget, locate

__all__ = ["TrainRequest", "TrainResult", "train"]


def train(request: TrainRequest, reporter: Reporter | None = None) -> TrainResult:
    """Train one stage as a new run, or continue one (`request.resume`); see the module docstring."""
    reporter = reporter or NullReporter()
    if request.resume is not None:
        return _resume(request, reporter)
    return _new_run(request, reporter)


def _new_run(request: TrainRequest, reporter: Reporter) -> TrainResult:
    from vlmft_cli.training.arguments import report_to
    from vlmft_cli.training.lineage import resolve_init_adapter

    resolved = absolute_paths(request.settings.resolve())
    report_to(resolved.settings)  # a logger that cannot run fails now, not after the model has loaded
    plan = plan_run(resolved, reporter, world=distributed.world_size())
    if request.dry_run:
        return dry_run_result(plan)
    reporter.info(plan_line(plan))
    device = start_processes(plan)
    reporter = voice(reporter)
    init = resolve_init_adapter(plan.settings, request.starting_point(), reporter)
    run = runs.Run(distributed.on_rank_zero_then_share(partial(create_run, plan, device, init)))
    with lead_lock(run, reporter), recording_failure(run):
        session = _setup(plan, run, device, reporter, init_adapter=init.path if init else None, resume_from=None)
        return finish(session, run_trainer(session, plan.settings, resume_from=None), plan.settings)


def _resume(request: TrainRequest, reporter: Reporter) -> TrainResult:
    found = locate(experiments_folder(request), request.resume or "latest", experiment=request.experiment, reporter=reporter)
    if isinstance(found, NothingToResume):
        reporter.info(found.message)
        return TrainResult("already-finished", found.run.path, found.step, found.checkpoint, message=found.message)
    from vlmft_cli.training.arguments import report_to

    resolved, reconciliation = reconcile_resume(request, found)
    report_to(resolved.settings)
    plan = plan_run(resolved, reporter, world=distributed.world_size())
    for line in reconciliation.lines():
        reporter.info(line)
    if request.dry_run:
        return dry_run_result(plan, reconciliation.lines(), run_dir=found.run.path, step=found.checkpoint.step)
    reporter.info(plan_line(plan))
    device = start_processes(plan)
    reporter = voice(reporter)
    with lead_lock(found.run, reporter), recording_failure(found.run):
        if distributed.rank() == 0:
            reopen_run(plan, found, reconciliation)
        session = _setup(plan, found.run, device, reporter, init_adapter=None, resume_from=found.checkpoint)
        return finish(session, run_trainer(session, plan.settings, resume_from=found.checkpoint), plan.settings)


# --- plan ------------------------------------------------------------------------------------------


def absolute_paths(resolved: ResolvedSettings) -> ResolvedSettings:
    """The folders a run records, made absolute so it can be resumed from anywhere."""
    settings = resolved.settings
    update = {key: Path(value).expanduser().resolve() for key in ("data", "out", "home") if (value := getattr(settings, key)) is not None}
    return ResolvedSettings(settings.model_copy(update=update), resolved.profile, resolved.sources)


def plan_line(plan: Plan) -> str:
    """What the run will do, printed before the model loads (the plan phase has said what it read)."""
    qas = sum(example.num_qas for example in plan.train_examples)
    packed = f", packed ({plan.packing.mean_qas_per_video:.2f} QAs per video)" if plan.packed else ""
    return (
        f"stage {plan.settings.stage}: {qas:,} QAs in {plan.optimizer_steps:,} optimizer steps, accumulation "
        f"{plan.accumulation}{packed}; {plan.checkpointing.line()}; loading {plan.settings.model}"
    )


def experiments_folder(request: TrainRequest) -> Path:
    """Where `latest` and run names are looked up: the `out` setting as given now (flags, environment)."""
    flags = request.settings.flags
    if flags.get("out") is not None:
        return Path(flags["out"])
    return request.settings.resolve().settings.out


def dry_run_result(plan: Plan, resume_lines: list[str] | None = None, *, run_dir: Path | None = None, step: int = 0) -> TrainResult:
    from vlmft_cli.training.dry_run import describe

    return TrainResult(status="dry-run", run_dir=run_dir, global_step=step, plan=describe(plan, resume_lines), message="dry run: nothing was trained")


# --- reconcile (resume only) ---------------------------------------------------------------------------


def reconcile_resume(request: TrainRequest, target: ResumeTarget) -> tuple[ResolvedSettings, Reconciliation]:
    """The run's stored settings with the new layers on top, its own location, and the reconcile verdict."""
    resolved = request.settings.resolve(stored=target.stored)
    located: dict[str, Any] = {"out": target.run.path.parent.resolve()}
    data_given = not resolved.sources.get("data", "").startswith(target.stored.origin)
    if not data_given and target.record.data is not None:
        located["data"] = Path(target.record.data.dir)
    resolved = absolute_paths(ResolvedSettings(resolved.settings.model_copy(update=located), resolved.profile, resolved.sources))
    data = resolved.settings.data
    if data is None or not Path(data).is_dir():
        raise DataError(f"the data folder of run {target.run.name} ({data}) is not there", hint="pass --data DIR: its files are checked against the sha256 recorded in run.json")
    files = target.record.data.files if target.record.data else {}
    data_changes, digests = check_data(files, Path(data), resolved.settings.stage)
    verdict = reconcile(target.stored, resolved, step=target.checkpoint.step, force=request.force_new_settings, data_changes=data_changes)
    verdict.data_digests = digests
    return resolved, verdict


def reopen_run(plan: Plan, target: ResumeTarget, verdict: Reconciliation) -> None:
    """Record the resume (what was applied and forced, what was skipped) and store the settings it trains with."""
    from vlmft_cli.fsutil import atomic_write_text
    from vlmft_cli.training.lineage import data_info

    # Unchanged values keep their original source rather than "run X (…)".
    stored_sources = {
        key: target.stored.sources.get(key, source) if source.startswith(f"{target.stored.origin} (") else source
        for key, source in plan.resolved.sources.items()
    }
    atomic_write_text(target.run.path / runs.CONFIG_FILE, ResolvedSettings(plan.resolved.settings, plan.profile, stored_sources).document())
    resumption = Resumption(
        step=target.checkpoint.step,
        at=runs.utc_now(),
        processes=plan.world,
        checkpoint=str(target.checkpoint.path),
        applied={change.key: change.as_pair() for change in verdict.applied},
        forced={change.key: change.as_pair() for change in verdict.forced},
        skipped=target.skipped,
    )
    record = read_record(target.run.path)
    changes = {
        "status": RunStatus.RUNNING,
        "resumed": [*record.resumed, resumption],
        "data": data_info(plan, known=verdict.data_digests),
        "pack": PackInfo(**plan.pack_record()),  # the accumulation follows the micro-batch and device count
        "gradient_checkpointing": plan.checkpointing.as_dict() if plan.checkpointing else None,  # auto decides again
        "updated": runs.utc_now(),
    }
    write_record(target.run.path, record.model_copy(update={**changes, "stop_reason": None, "error": None}))


# --- setup ---------------------------------------------------------------------------------------------


def start_processes(plan: Plan) -> str:
    """The device this run trains on, with the process group started when several processes train it."""
    from vlmft_cli.runtime import pick_device

    device = pick_device(plan.profile)
    distributed.init_process_group(device)
    return device


def voice(reporter: Reporter) -> Reporter:
    """One voice: rank 0 reports, logs and saves."""
    return reporter if distributed.rank() == 0 else NullReporter()


def create_run(plan: Plan, device: str, init: runs.Checkpoint | None) -> Path:
    """A new run folder with its settings and record (rank 0 only)."""
    from vlmft_cli.fsutil import atomic_write_text
    from vlmft_cli.training.lineage import new_record

    settings = plan.settings
    run = runs.Run(runs.new_run_dir(settings.out, settings.experiment or f"stage{settings.stage}"))
    atomic_write_text(run.path / runs.CONFIG_FILE, plan.resolved.document())
    write_record(run.path, new_record(plan, run, device=device, init=init))
    return run.path


@contextmanager
def lead_lock(run: runs.Run, reporter: Reporter) -> Iterator[None]:
    """Rank 0 holds the run's lock while it trains (the other ranks follow rank 0)."""
    from vlmft_cli.run_lock import run_lock

    lock = run_lock(run.path, reporter=reporter) if distributed.rank() == 0 else contextlib.nullcontext()
    with lock:
        yield


def _setup(plan: Plan, run: runs.Run, device: str, reporter: Reporter, *, init_adapter: Path | None, resume_from: runs.Checkpoint | None) -> Any:
    from vlmft_cli.training.session import build_session

    return build_session(plan, run, device=device, init_adapter=init_adapter, resume_from=resume_from, reporter=reporter, lead=distributed.rank() == 0)


# --- train ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    training_loss: float | None
    stop: Any = None  # callbacks.Stop: a signal, the memory cap, a non-finite step or too many unreadable samples
    bad_samples: int = 0  # unreadable training samples skipped (distinct lines, this run's whole life)

    @property
    def stop_reason(self) -> str | None:
        return self.stop.reason if self.stop is not None else None


def run_trainer(session: Any, settings: Settings, *, resume_from: runs.Checkpoint | None) -> Outcome:
    """The Trainer's loop, with a clean stop on SIGTERM/Ctrl-C, the memory cap, a non-finite step or too
    many unreadable samples, and a saved step on out of memory."""
    from vlmft_cli.training.memory import is_out_of_memory

    session.stop.install()
    try:
        output = session.trainer.train(resume_from_checkpoint=str(resume_from.path) if resume_from else None)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise out_of_memory(session.trainer, settings) from None
    finally:
        session.stop.uninstall()
    bad = len(session.faults.bad()) if session.faults is not None else 0
    return Outcome(output.training_loss, session.stopper.decided, bad)


def out_of_memory(trainer: Any, settings: Settings) -> VlmftError:
    saved = _save_after_oom(trainer)
    where = f"; the last completed step was saved to {saved}" if saved else ""
    return VlmftError(
        f"out of memory at step {trainer.state.global_step} (micro_batch_size {settings.micro_batch_size}, "
        f"max_frames {settings.max_frames}, max_length {settings.max_length}){where}",
        hint="lower --micro-batch-size (accumulation grows to keep the batch), --max-frames or --max-length, or use --quantize 4bit",
    )


def _save_after_oom(trainer: Any) -> Path | None:
    """Save the last completed optimizer step after an OOM, if memory allows; never raise."""
    import torch

    try:
        trainer.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        trainer._save_checkpoint(trainer.model, None)
        return trainer.run.checkpoints_dir / f"checkpoint-{trainer.state.global_step}"
    except Exception:
        return None


# --- finish --------------------------------------------------------------------------------------------


def finish(session: Any, outcome: Outcome, settings: Settings) -> TrainResult:
    """Mark the run finished, interrupted (a signal, the memory cap, too many unreadable samples: resumable
    from the checkpoint written at the stop) or failed (a non-finite step: the newest checkpoint is the
    last good one) and say so; the result carries the newest good checkpoint and the stop's kind, which
    the CLI turns into its exit code."""
    run, trainer, step = session.run, session.trainer, session.trainer.state.global_step
    good = run.good_checkpoints()
    last = good[-1].path if good else None
    eval_metrics = trainer.last_eval[1].as_dict() if trainer.last_eval else None
    lead = distributed.rank() == 0
    skipped = f"; {outcome.bad_samples} unreadable training sample(s) skipped (run.json lists them under bad_samples)" if outcome.bad_samples else ""
    result = {"run_dir": run.path, "global_step": step, "last_checkpoint": last, "train_loss": outcome.training_loss, "eval_metrics": eval_metrics, "bad_samples": outcome.bad_samples}
    stop = outcome.stop
    if stop is not None:
        resume = f"vlmft ckpt resume --latest --out {run.path.parent}"
        if stop.kind == StopKind.NON_FINITE.value:
            status = RunStatus.FAILED
            kept = f"the newest checkpoint, {last}, is the last good one" if last else "no checkpoint had been written before it"
            message = (
                f"stopped at step {step}: {stop.reason}; {kept}. Lower the learning rate or check that step's data; "
                f"resuming with another learning rate needs --force-new-settings: {resume} --lr LR --force-new-settings{skipped}"
            )
        else:
            status = RunStatus.INTERRUPTED
            advice = {
                StopKind.MEMORY_CAP.value: " --memory-cap-gb GB (a larger cap)",
                StopKind.BAD_SAMPLES.value: f" --max-bad-samples N (above {settings.max_bad_samples}), or fix those frames first",
            }.get(stop.kind, "")
            message = f"stopped at step {step} ({stop.reason}); checkpoint {last}. Resume with: {resume}{advice}{skipped}"
        if lead:
            errors = {"error": stop.reason} if status == RunStatus.FAILED else {}
            update_record(run.path, status=status.value, stop_reason=stop.reason, global_step=step, updated=runs.utc_now(), **errors)
        session.log.info(message)
        return TrainResult(status.value, **result, message=message, stop=stop.kind, stop_reason=stop.reason)
    if lead:
        now = runs.utc_now()
        update_record(run.path, status=RunStatus.FINISHED.value, finished=now, updated=now, global_step=step, median_step_time_s=session.metrics.median_step_time())
    message = f"finished stage {settings.stage} at step {step}; checkpoint {last}{skipped}"
    session.log.info(message)
    return TrainResult("finished", **result, message=message)


@contextmanager
def recording_failure(run: runs.Run) -> Iterator[None]:
    """Mark the run failed, with the error, when anything escapes (rank 0 writes)."""
    try:
        yield
    except BaseException as exc:
        if distributed.rank() == 0 and read_record(run.path).status == RunStatus.RUNNING.value:
            reason = "interrupted by the user" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            # A full disk can refuse run.json too: the error the user sees stays the original one.
            with contextlib.suppress(OSError):
                update_record(run.path, status=RunStatus.FAILED.value, error=reason, updated=runs.utc_now())
        raise

