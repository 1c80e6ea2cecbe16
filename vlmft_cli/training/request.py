"""What `train()` is asked for and what it answers: the Python API's request and result types.

Kept free of torch and transformers so the CLI can build a request without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.settings import SettingsInput


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


@dataclass
class TrainResult:
    status: str  # "finished", "interrupted", "dry-run", "already-finished"
    run_dir: Path | None = None
    global_step: int = 0
    last_checkpoint: Path | None = None
    train_loss: float | None = None
    eval_metrics: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    message: str = ""

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
        }
