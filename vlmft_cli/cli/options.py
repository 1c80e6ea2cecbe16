"""Options shared by several commands, each defined once (Annotated style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
ProfileOption = Annotated[str | None, typer.Option("--profile", "-p", help="Hardware profile name or path to a profile file.", show_default=False)]
StageOption = Annotated[int, typer.Option("--stage", "-s", min=1, max=2, help="Curriculum stage: 1 (one QA per sample) or 2 (whole conversations).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of settings (overrides the profile, overridden by VLMFT_* and flags).", show_default=False)]
RecipeOption = Annotated[
    str | None,
    typer.Option("--recipe", "-r", help="A recipe (a named config file, see `vlmft recipes list`) or its path: above the profile, below --config, VLMFT_* and flags.", show_default=False),
]
