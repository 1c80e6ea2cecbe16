"""What an evaluation evaluates, with which settings, and where its files go.

A checkpoint is evaluated with its run's own settings (model, backend, frames, max length, frame
sampling, precision…) from the run's config.yaml, so inputs match training: the one settings resolver
puts them under what `eval` was given, as a resume does. Evaluating a run on the
other stage's data (the curriculum ablation) takes that stage's default frames and max length, as a run
trained on it would. `--profile` replaces the hardware settings (for evaluating on another machine).
The base model alone ("zero-shot") takes the stage defaults and the profile, like a new run.

Files go to `{run}/eval/stage{S}-{split}-step{N}[-limit{L}|-subset{E}]/`, or for the base model to
`{experiments}/zero-shot_{model}/eval/stage{S}-{split}-step0[-limit{L}|-subset{E}]/`, unless `out` is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli import runs
from vlmft_cli.errors import ConfigError
from vlmft_cli.profiles import Profile
from vlmft_cli.reporting import NullReporter, Reporter
from vlmft_cli.run_record import RunRecord
from vlmft_cli.settings import (
    SOURCE_STAGE,
    STAGE_DEFAULTS,
    ResolvedSettings,
    Settings,
    load_stored_settings,
    resolve_settings,
)

EVAL_DIR = "eval"
BASE_MODEL_REFS = (None, "", "none")
INPUT_KEYS = ("max_frames", "max_length")  # what a stage changes about the inputs


@dataclass(frozen=True)
class EvalRequest:
    """What `vlmft eval` asks for. `checkpoint` None or "none" evaluates the base model `model`."""

    data: Path | None = None
    stage: int | None = None  # default: the run's stage (1 for the base model)
    checkpoint: str | None = None  # "latest", a checkpoint folder, a run folder or name
    model: str | None = None  # the base model (default tiny-internvl3); must match a checkpoint's
    backend: str | None = None
    split: str = "val"
    limit: int | None = None  # the first N examples (QAs in stage 1, conversations in stage 2)
    eval_limit: int | None = None  # the seeded subset of at most N QAs per task type (as at training checkpoints)
    generate: bool = False
    batch_size: int | None = None  # default: the eval_batch_size setting
    max_new_tokens: int = 64
    score_format: str = "clean"  # what BLEU compares: "clean" answers or the "official" targets (`A: yes`); see scoring
    out: Path | None = None  # the output folder; default inside the run (see the module docstring)
    runs_dir: Path = Path("experiments")  # where `latest` and run names are looked up
    home: Path | None = None
    profile: str | None = None
    settings: dict[str, Any] | None = None  # other settings given on the command line (`vlmft chat`)
    needs_data: bool = True  # False: no data folder is evaluated (`vlmft chat`)


@dataclass(frozen=True)
class EvalTarget:
    """The model to evaluate (a checkpoint, or the base model when `checkpoint` is None) and its settings."""

    settings: Settings
    profile: Profile
    checkpoint: runs.Checkpoint | None
    output_dir: Path

    @property
    def step(self) -> int:
        return self.checkpoint.step if self.checkpoint else 0

    @property
    def label(self) -> str:
        if self.checkpoint is None:
            return f"{self.settings.model} (zero-shot)"
        return f"{self.checkpoint.run_dir.name}/{self.checkpoint.path.name}"

    def describe(self) -> dict[str, Any]:
        """The model part of metrics.json."""
        record = runs.Run(self.checkpoint.run_dir).record() if self.checkpoint else RunRecord()
        return {
            "label": self.label,
            "model": self.settings.model,
            "backend": record.backend or self.settings.backend,
            "base_model": record.base_model,
            "checkpoint": str(self.checkpoint.path) if self.checkpoint else None,
            "step": self.step,
            "run": self.checkpoint.run_dir.name if self.checkpoint else None,
            "run_path": str(self.checkpoint.run_dir) if self.checkpoint else None,
            "trained_stage": record.stage,
            "parent": record.parent.model_dump() if record.parent else None,
        }


def is_base_model(checkpoint: str | None) -> bool:
    return checkpoint in BASE_MODEL_REFS


def model_slug(model: str) -> str:
    """A folder-name-safe form of a model name, hub id or path."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.")
    return slug[-80:] or "model"


def output_folder_name(stage: int, split: str, step: int, limit: int | None, eval_limit: int | None = None) -> str:
    return f"stage{stage}-{split}-step{step}" + (f"-limit{limit}" if limit else "") + (f"-subset{eval_limit}" if eval_limit else "")


def _checkpoint_settings(request: EvalRequest, checkpoint: runs.Checkpoint, reporter: Reporter) -> ResolvedSettings:
    """The run's stored settings with what `eval` was given on top, by the one settings resolver."""
    run = runs.Run(checkpoint.run_dir)
    stored = load_stored_settings(run.path / runs.CONFIG_FILE, origin=f"run {run.name}")
    trained_model, trained_stage = stored.values.get("model"), int(stored.values.get("stage") or 1)
    if request.model and request.model != trained_model:
        raise ConfigError(
            f"checkpoint {checkpoint.path} is an adapter for {trained_model!r}, not {request.model!r}",
            hint="leave out --model with --checkpoint, or pass --checkpoint none to evaluate the base model",
        )
    stage = request.stage or trained_stage
    over_stored = None
    if stage != trained_stage:
        inputs = {key: STAGE_DEFAULTS[stage][key] for key in INPUT_KEYS}
        over_stored = (inputs, SOURCE_STAGE.format(stage=stage))
        reporter.info(f"the run trained stage {trained_stage}; stage-{stage} data is evaluated with that stage's defaults " + ", ".join(f"{key} {value}" for key, value in inputs.items()))
    flags = {**(request.settings or {}), "data": request.data, "home": request.home, "backend": request.backend}
    return resolve_settings(stage=stage, profile=request.profile, cli=flags, stored=stored, over_stored=over_stored)


def _base_model_settings(request: EvalRequest) -> ResolvedSettings:
    cli = {**(request.settings or {}), "model": request.model, "backend": request.backend, "data": request.data, "home": request.home, "out": request.runs_dir}
    return resolve_settings(stage=request.stage or 1, profile=request.profile, cli=cli)


def resolve_target(request: EvalRequest, reporter: Reporter | None = None) -> EvalTarget:
    """The checkpoint (or base model) to evaluate, its settings and the output folder."""
    reporter = reporter or NullReporter()
    if request.split not in ("train", "val"):
        raise ConfigError(f"split must be train or val, not {request.split!r}")
    if request.limit is not None and request.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if request.eval_limit is not None and request.eval_limit < 1:
        raise ConfigError("--eval-limit must be at least 1")
    if request.limit is not None and request.eval_limit is not None:
        raise ConfigError("pass --limit (the first N examples) or --eval-limit (a seeded subset per task type), not both")
    if is_base_model(request.checkpoint):
        checkpoint = None
        resolved = _base_model_settings(request)
    else:
        checkpoint = runs.resolve_checkpoint(request.runs_dir, str(request.checkpoint), reporter=reporter)
        resolved = _checkpoint_settings(request, checkpoint, reporter)
    settings, profile = resolved.settings, resolved.profile
    if settings.data is None and request.needs_data:
        raise ConfigError("no data folder to evaluate on: pass --data DIR (what `vlmft data extract` wrote)")
    folder = output_folder_name(settings.stage, request.split, checkpoint.step if checkpoint else 0, request.limit, request.eval_limit)
    if request.out is not None:
        output_dir = request.out
    elif checkpoint is not None:
        output_dir = checkpoint.run_dir / EVAL_DIR / folder
    else:
        output_dir = request.runs_dir / f"zero-shot_{model_slug(settings.model)}" / EVAL_DIR / folder
    return EvalTarget(settings=settings, profile=profile, checkpoint=checkpoint, output_dir=output_dir)
