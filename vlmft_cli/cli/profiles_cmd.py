"""`vlmft profiles`: the hardware profiles found, and the settings one resolves to, with sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import ConfigOption, JsonOption

app = typer.Typer(name="profiles", help="Hardware profiles: memory caps, batch sizes, precision.", no_args_is_help=True)


@app.command("list")
def list_profiles(json: JsonOption = False) -> None:
    """List the profiles found (user folder first, then plugins).

    Example: vlmft profiles list
    """
    from vlmft_cli.profiles import available_profiles, load_profile

    rows = []
    for name in available_profiles():
        profile = load_profile(name)
        hw = profile.hardware
        rows.append(
            {
                "name": name,
                "description": profile.spec.description,
                "device": hw.device,
                "memory_gb": hw.memory_gb,
                "unified_memory": hw.unified_memory,
                "origin": profile.origin,
            }
        )
    if json:
        output.print_json(rows)
        return
    output.print_table(
        "Profiles",
        ["name", "description", "memory", "origin"],
        [[r["name"], r["description"], f"{r['memory_gb']:g} GB{' unified' if r['unified_memory'] else ''}", r["origin"]] for r in rows],
    )


@app.command("show")
def show_profile(
    name: Annotated[str, typer.Argument(help="Profile name or path to a profile file.")],
    stage: Annotated[int, typer.Option("--stage", "-s", min=1, max=2, help="Stage whose settings to resolve.")] = 1,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Show a profile's hardware facts and the settings it resolves to for a stage, with each value's source.

    Example: vlmft profiles show gb10 --stage 2
    """
    from vlmft_cli.settings import resolve_settings

    resolved = resolve_settings(stage=stage, profile=name, config_file=Path(config) if config else None)
    profile = resolved.profile
    if json:
        output.print_json(
            {
                "name": profile.name,
                "origin": profile.origin,
                "path": profile.path,
                "description": profile.spec.description,
                "hardware": profile.hardware.model_dump(),
                "stage": stage,
                "gradient_accumulation_steps": resolved.settings.gradient_accumulation_steps(),
                "settings": resolved.described(),
            }
        )
        return
    output.console.print(f"[bold]{profile.name}[/] — {profile.spec.description}  [dim]({profile.origin}: {profile.path})[/]")
    output.print_table("Hardware", ["fact", "value"], [[k, v] for k, v in profile.hardware.model_dump().items()])
    rows = [[r["key"], r["value"], r["source"]] for r in resolved.described()]
    rows.append(["gradient_accumulation_steps", resolved.settings.gradient_accumulation_steps(), "global_batch_size ÷ micro_batch_size"])
    output.print_table(f"Settings for stage {stage}", ["key", "value", "source"], rows)
