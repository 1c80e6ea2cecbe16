"""`vlmft ckpt resume`: continue the newest good checkpoint exactly where it stopped.

It takes the same generated setting options as `vlmft train` (see `vlmft_cli.cli.settings_options`),
applied over the run's stored settings and reconciled with them, except two that are fixed by the run
being resumed: `--stage` (the run's stage is what the checkpoint trained; a different stage is a new run)
and the `experiment` setting (the run already has its name; here `--experiment` filters which runs
`--latest` looks at, as the other `ckpt` commands do).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import ConfigOption, JsonOption
from vlmft_cli.cli.settings_options import with_setting_options
from vlmft_cli.cli.train_cmd import exit_for, print_result

#: Settings a resume cannot take (see the module docstring).
NOT_ON_RESUME = frozenset({"stage", "experiment"})

RESUME_HELP = {
    "data": "Point the run at moved data; checked against the sha256 recorded in run.json.",
    "out": "Experiments folder holding the run (default: the `out` setting, `experiments`; env VLMFT_OUT).",
    "profile": "Hardware profile (name or path to a profile file) applied over the run's own settings.",
}

ForceNewSettingsOption = Annotated[
    bool,
    typer.Option("--force-new-settings", help="Accept settings that would make the run a different run (learning rate, data, LoRA shape, …); recorded in run.json."),
]


@with_setting_options(exclude=NOT_ON_RESUME, help=RESUME_HELP)
def resume(
    latest: Annotated[bool, typer.Option("--latest", help="The newest complete checkpoint (of --experiment, if given).")] = False,
    checkpoint: Annotated[str | None, typer.Argument(help="A checkpoint or run folder instead of --latest.", show_default=False)] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Only runs of this experiment name.", show_default=False)] = None,
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what the resume would apply and refuse, then exit.")] = False,
    force_new_settings: ForceNewSettingsOption = False,
    json: JsonOption = False,
    *,
    settings_flags: dict[str, Any],
) -> None:
    """Resume training: adapter, optimizer, scheduler, RNG and data position, with the run's own settings.

    Settings given here are compared with the run's: safe ones (batch sizes, cadence, max steps, …) are
    applied and listed, ones that would make it a different run are refused unless --force-new-settings.
    Incomplete or corrupt checkpoints are skipped with a message.

    Example: vlmft ckpt resume --latest

    Example: vlmft ckpt resume --latest --max-steps 20000 --data /mnt/new/robovqa
    """
    from vlmft_cli.errors import VlmftError
    from vlmft_cli.settings import SettingsInput
    from vlmft_cli.training.recipe import train as run_training
    from vlmft_cli.training.request import TrainRequest

    if latest == (checkpoint is not None):
        raise VlmftError("pass either --latest or a CHECKPOINT", hint="vlmft ckpt resume --latest")
    flags = dict(settings_flags)
    settings = SettingsInput(profile=flags.pop("profile", None), config_file=config, flags=flags)
    request = TrainRequest(settings=settings, resume="latest" if latest else checkpoint, experiment=experiment, dry_run=dry_run, force_new_settings=force_new_settings)
    result = run_training(request, output.make_reporter(quiet=json))
    print_result(result, json=json)
    exit_for(result)  # a stop exits as `vlmft train` does
