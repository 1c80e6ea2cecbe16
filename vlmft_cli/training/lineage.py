"""Where a run comes from: the stage-1 adapter stage 2 starts from, and the run record written when a run
is created (data with its sha256, versions, hardware, pack mode, parent)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from vlmft_cli import __version__, runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.profiles import Profile
from vlmft_cli.reporting import Reporter
from vlmft_cli.run_record import DataFile, DataInfo, PackInfo, Parent, RunRecord, RunStatus
from vlmft_cli.settings import Settings
from vlmft_cli.training.plan import Plan


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"vlmft": __version__, "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def hardware(device: str, profile: Profile, processes: int) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"profile": profile.name, "device": device, "host": platform.node(), "machine": platform.machine(), "processes": processes}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1), compute_capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count())
    return info


def resolve_init_adapter(settings: Settings, init_from: str | None, reporter: Reporter) -> runs.Checkpoint | None:
    """The stage-1 checkpoint stage 2 starts from (said aloud), or None for the base model."""
    if settings.stage == 1:
        if init_from not in (None, "none"):
            reporter.warning("--init-from is for stage 2; stage 1 starts from the base model")
        return None
    if init_from == "none":
        reporter.warning("stage 2 starts from the base model (--init-from none): no curriculum")
        return None
    if init_from is not None:
        checkpoint = runs.resolve_checkpoint(settings.out, init_from, reporter=reporter)
        reporter.info(f"Stage 2 starts from {checkpoint.path}")
        return checkpoint
    finished = [r for r in runs.list_runs(settings.out, stage=1) if r.status == RunStatus.FINISHED.value and r.good_checkpoints()]
    if not finished:
        raise CheckpointError(
            f"stage 2 starts from a stage-1 adapter and there is no finished stage-1 run under {settings.out}",
            hint="train stage 1 first, pass --init-from PATH, or --init-from none for stage 2 alone",
        )
    run = finished[-1]
    checkpoint = runs.best_checkpoint(run.good_checkpoints()) or run.good_checkpoints()[-1]
    reporter.info(f"Stage 2 starts from the newest finished stage-1 run: {checkpoint.path} (pass --init-from to choose another)")
    return checkpoint


def data_info(plan: Plan, known: dict[str, str] | None = None) -> DataInfo:
    """The data folder and each split file with its sha256 (absolute paths, so a resume finds them anywhere);
    `known` digests (by resolved path, e.g. the resume's data check) are not computed again."""
    from vlmft_cli.fsutil import sha256_file

    assert plan.settings.data is not None
    known = known or {}
    files = {}
    for summary in plan.summaries:
        path = str(Path(summary.path).resolve())
        files[summary.split] = DataFile(path=path, sha256=known.get(path) or getattr(summary, "sha256", None) or sha256_file(summary.path), lines=summary.lines)
    return DataInfo(dir=str(Path(plan.settings.data).resolve()), files=files)


def new_record(plan: Plan, run: runs.Run, *, device: str, init: runs.Checkpoint | None) -> RunRecord:
    settings = plan.settings
    parent = Parent(run=init.run_dir.name, run_path=str(init.run_dir.resolve()), checkpoint=str(init.path.resolve()), step=init.step) if init else None
    return RunRecord(
        name=run.name,
        stage=settings.stage,
        status=RunStatus.RUNNING,
        created=runs.utc_now(),
        model=settings.model,
        backend=plan.backend.name,
        base_model=plan.backend.resolve(settings.model, settings.home),
        attention=plan.attention.name,
        profile=plan.profile.name,
        parent=parent,
        pack=PackInfo(**plan.pack_record()),
        gradient_checkpointing=plan.checkpointing.as_dict() if plan.checkpointing else None,
        data=data_info(plan),
        versions=versions(),
        hardware=hardware(device, plan.profile, plan.world),
    )
