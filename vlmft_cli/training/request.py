"""What `train()` is asked for and what it answers: the Python API's request and result types.

Kept free of torch and transformers so the CLI can build a request without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.settings import SettingEnum, SettingsInput


class StopKind(SettingEnum):
    """Why a run stopped before its last step. Each has its exit code (`EXIT_CODES`)."""

    SIGINT = "SIGINT"  # Ctrl-C: checkpoint written, resumable
    SIGTERM = "SIGTERM"  # timeout, systemd, Slurm: checkpoint written, resumable
    MEMORY_CAP = "memory-cap"  # checkpoint written; resume with a larger --memory-cap-gb
    BAD_SAMPLES = "bad-samples"  # more than max_bad_samples unreadable samples: checkpoint written
    NON_FINITE = "non-finite"  # the loss or gradient norm turned NaN/inf: nothing saved for that step


#: The exit code of `vlmft train` and `vlmft ckpt resume` for each stop (0: finished or nothing to do;
#: 2: an error, one line). Signals follow the shell's 128 + signal number.
EXIT_CODES: dict[str, int] = {
    StopKind.SIGINT.value: 130,
    StopKind.SIGTERM.value: 143,
    StopKind.MEMORY_CAP.value: 3,
    StopKind.BAD_SAMPLES.value: 4,
    StopKind.NON_FINITE.value: 5,
}


@dataclass(frozen=True)
class TrainRequest:
    """One call of `vlmft train` or `vlmft ckpt resume`.

    `settings` holds the layers given now (profile, config file, flags; the environment is read when
    resolving). With `resume`, the run's stored settings are the layer under them and a reconcile decides
    which differences are applied and which are refused (`force_new_settings` accepts those knowingly).
    """

    settings: SettingsInput = field(default_factory=SettingsInput)
    init_from: str | None = None  # stage 2: a checkpoint or run; "none" = the base model; None = newest stage-1 run
    resume: str | None = None  # "latest", a checkpoint folder, or a run folder or name
    experiment: str | None = None  # with resume="latest": only runs of this experiment name
    dry_run: bool = False
    force_new_settings: bool = False

    def starting_point(self) -> str | None:
        """Where stage 2 starts: `init_from` when given, else the recipe's `init_from`, else None (the
        newest finished stage-1 run)."""
        if self.init_from is not None or self.settings.recipe is None:
            return self.init_from
        from vlmft_cli.recipes import load_recipe

        return load_recipe(self.settings.recipe).init_from


@dataclass
class TrainResult:
    status: str  # "finished", "interrupted", "failed" (a non-finite loss), "dry-run", "already-finished"
    run_dir: Path | None = None
    global_step: int = 0
    last_checkpoint: Path | None = None
    train_loss: float | None = None
    eval_metrics: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    message: str = ""
    stop: str | None = None  # a StopKind when the run stopped early
    stop_reason: str | None = None
    bad_samples: int = 0  # unreadable training samples skipped (distinct JSONL lines)

    @property
    def exit_code(self) -> int:
        """What the CLI exits with: 0 unless the run stopped early (`EXIT_CODES`)."""
        return EXIT_CODES.get(str(self.stop), 1) if self.stop else 0

    def as_dict(self) -> dict[str, Any]:
        """The `--json` answer of `train` and `ckpt resume`."""
        return {
            "status": self.status,
            "run": self.run_dir,
            "step": self.global_step,
            "checkpoint": self.last_checkpoint,
            "train_loss": self.train_loss,
            "eval": self.eval_metrics,
            "plan": self.plan,
            "message": self.message,
            "stop": self.stop,
            "stop_reason": self.stop_reason,
            "bad_samples": self.bad_samples,
            "exit_code": self.exit_code,
        }
