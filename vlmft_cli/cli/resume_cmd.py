"""`vlmft ckpt resume`: continue the newest good checkpoint exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption


def resume(
    latest: Annotated[bool, typer.Option("--latest", help="The newest complete checkpoint (of --experiment, if given).")] = False,
    checkpoint: Annotated[str | None, typer.Argument(help="A checkpoint or run folder instead of --latest.", show_default=False)] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Only runs of this experiment name.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Experiments folder (default: the `out` setting, VLMFT_OUT).", show_default=False)] = None,
    json: JsonOption = False,
) -> None:
    """Resume training: adapter, optimizer, scheduler, RNG and data position, with the run's own settings.

    Incomplete or corrupt checkpoints are skipped with a message. Example: vlmft ckpt resume --latest
    """
    from vlmft_cli.ckpt.locations import default_out
    from vlmft_cli.errors import VlmftError
    from vlmft_cli.training.run import resume as resume_training

    if latest == (checkpoint is not None):
        raise VlmftError("pass either --latest or a CHECKPOINT", hint="vlmft ckpt resume --latest")
    experiments = out or default_out()
    result = resume_training(experiments, experiment=experiment, checkpoint=checkpoint, reporter=output.make_reporter(quiet=json))
    if json:
        output.print_json({"status": result.status, "run": result.run_dir, "step": result.global_step, "checkpoint": result.last_checkpoint, "train_loss": result.train_loss})
        return
    output.console.print(result.message)
