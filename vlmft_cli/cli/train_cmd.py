"""`vlmft train`: one curriculum stage on processed data, as a new run or a resumed one.

The setting options (`--lr`, `--data`, `--precision`, …) are generated from the settings model by
`vlmft_cli.cli.settings_options`; this module declares only what is not a setting.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import ConfigOption, JsonOption, RecipeOption
from vlmft_cli.cli.settings_options import with_setting_options

if TYPE_CHECKING:
    from vlmft_cli.training.request import TrainResult

ForceNewSettingsOption = Annotated[
    bool,
    typer.Option(
        "--force-new-settings",
        help="With --resume: accept settings that would make the run a different run (learning rate, data, LoRA shape, …); recorded in run.json.",
    ),
]


@with_setting_options()
def train(
    config: ConfigOption = None,
    recipe: RecipeOption = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="Stage 2: stage-1 checkpoint or run to start from; 'none' for the base model. Default: the newest finished stage-1 run.", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue a run: 'latest', a checkpoint or a run folder.", show_default=False)] = None,
    force_new_settings: ForceNewSettingsOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show settings, token budget and memory estimate, then exit.")] = False,
    json: JsonOption = False,
    nproc: Annotated[int | None, typer.Option("--nproc", min=1, help="Data-parallel processes (one per GPU) through torchrun; the global batch stays the same.", show_default=False)] = None,
    *,
    settings_flags: dict[str, Any],
) -> None:
    """Train one curriculum stage with LoRA (QLoRA with --quantize 4bit).

    Exit codes: 0 finished; 2 an error you can fix, 1 an unexpected one; a stop with a checkpoint: 130 Ctrl-C, 143 SIGTERM, 3 memory cap, 4 more than --max-bad-samples unreadable samples; 5 a NaN/inf loss or gradient norm (the newest checkpoint is the last good one).

    Example: vlmft train --recipe stage1 --data robovqa --profile gb10   (the reference recipe, see `vlmft recipes list`)

    Example: vlmft train --stage 1 --data robovqa --profile gb10

    Example: vlmft train --stage 2 --data robovqa --profile gb10   (starts from the newest stage-1 run)

    Example: vlmft train --stage 1 --data robovqa --profile h100-80gb --nproc 8   (or: torchrun --nproc-per-node 8 -m vlmft_cli train …)
    """
    from vlmft_cli.training import distributed

    if nproc and nproc > 1 and not distributed.is_distributed_launch():
        raise typer.Exit(distributed.launch(nproc, sys.argv[1:]))

    from vlmft_cli.settings import SettingsInput
    from vlmft_cli.training.recipe import train as run_training
    from vlmft_cli.training.request import TrainRequest

    flags = dict(settings_flags)
    settings = SettingsInput(stage=flags.pop("stage", None), profile=flags.pop("profile", None), config_file=config, flags=flags, recipe=recipe)
    request = TrainRequest(settings=settings, init_from=init_from, resume=resume, dry_run=dry_run, force_new_settings=force_new_settings)
    result = run_training(request, output.make_reporter(quiet=json))
    print_result(result, json=json)
    exit_for(result)


def exit_for(result: TrainResult) -> None:
    """Exit non-zero when the run stopped early, so `vlmft train && vlmft eval` stops too: 130 for
    SIGINT, 143 for SIGTERM, 3 for the memory cap, 4 for too many unreadable samples, 5 for a non-finite
    loss or gradient norm (`vlmft_cli.training.request.EXIT_CODES`); the message says how to go on."""
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def print_result(result: TrainResult, *, json: bool) -> None:
    """What `train` and `ckpt resume` print: JSON, the dry run's plan, or the run's message (rank 0 only)."""
    from vlmft_cli.training import distributed

    if distributed.rank() != 0:
        return  # rank 0 speaks for the run
    if json:
        output.print_json(result.as_dict())
        return
    if result.plan is not None:
        show_plan(result.plan)
        return
    output.console.print(result.message, soft_wrap=True, markup=False)  # the resume command stays one line to copy


def show_plan(plan: dict) -> None:
    output.print_table(f"Settings for stage {plan['stage']}", ["key", "value", "source"], [[r["key"], r["value"], r["source"]] for r in plan["settings"] or []])
    rows = []
    for split, info in plan["data"].items():
        tokens = info["tokens_per_example"]
        rows.append([split, info["examples"], info["qas"], info["rejected_lines"], info["rejected_too_long"], info["turns_dropped"], f"{tokens['min']}/{tokens['median']:g}/{tokens['max']}", f"{info['tokens_total']:,}"])
    output.print_table("Data", ["split", "examples", "QAs", "bad lines", "too long", "turns dropped", "tokens min/median/max", "tokens total"], rows)
    packed = plan.get("pack") == "shared-prefix"
    lines = [
        f"optimizer steps: {plan['optimizer_steps']} ({plan['steps_per_epoch']} per epoch), accumulation {plan['gradient_accumulation_steps']}",
        f"padding share {'of packed micro-batches' if packed else 'with length grouping'}: {plan['padding_share']:.1%}",
    ]
    if plan.get("tokens_packed") is not None:
        packing = plan["packing"]
        lines.append(
            f"tokens per epoch: {plan['tokens_unpacked']:,} unpacked, {plan['tokens_packed']:,} packed ({plan['packing_ratio']:.2f}×; "
            f"{packing['mean_qas_per_video']:g} QAs per video, packed accumulation {packing['packed_accumulation']}) — training {'packed' if packed else 'unpacked'}"
        )
    else:
        lines.append(f"tokens per epoch: {plan['tokens_unpacked']:,} (not packed)")
    checkpointing = plan.get("gradient_checkpointing")
    if checkpointing:
        lines.append(f"gradient checkpointing: {checkpointing['value']} ({checkpointing['reason']})")
    memory = plan.get("memory_estimate")
    if memory:
        verdict = "fits" if memory["fits"] else "does NOT fit"
        lines.append(f"estimated peak memory {memory['peak_gb']:.2f} GB (weights {memory['weights_gb']:.2f}, optimizer {memory['optimizer_gb']:.3f}, activations {memory['activations_gb']:.2f}) {verdict} the {memory['cap_gb']:g} GB cap")
    for line in lines:
        output.console.print(line)


