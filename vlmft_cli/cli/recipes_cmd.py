"""`vlmft recipes`: the shipped recipes (named config files of a stage), what one resolves to, and a copy to edit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption, ProfileOption

app = typer.Typer(name="recipes", help="Recipes: the reference curriculum as config files to train with or copy.", no_args_is_help=True)

RecipeArgument = Annotated[str, typer.Argument(help="Recipe name (see `vlmft recipes list`) or path to a recipe file.")]


@app.command("list")
def list_recipes(json: JsonOption = False) -> None:
    """List the recipes found (user folder first, then plugins).

    Example: vlmft recipes list
    """
    from vlmft_cli.recipes import available_recipes, load_recipe

    rows = []
    for name in available_recipes():
        recipe = load_recipe(name)
        rows.append({"name": name, "stage": recipe.settings.get("stage"), "description": recipe.description, "origin": recipe.origin, "path": recipe.path})
    if json:
        output.print_json(rows)
        return
    output.print_table("Recipes", ["name", "stage", "description", "origin"], [[r["name"], r["stage"], r["description"], r["origin"]] for r in rows])


@app.command("show")
def show_recipe(name: RecipeArgument, profile: ProfileOption = None, json: JsonOption = False) -> None:
    """Show a recipe's file and the settings it resolves to with a profile, with each value's source.

    Example: vlmft recipes show stage2 --profile gb10
    """
    from vlmft_cli.recipes import load_recipe
    from vlmft_cli.settings import resolve_settings

    recipe = load_recipe(name)
    resolved = resolve_settings(profile=profile, recipe=name)
    if json:
        output.print_json(
            {"name": recipe.name, "origin": recipe.origin, "path": recipe.path, "description": recipe.description, "init_from": recipe.init_from, "settings": resolved.described()}
        )
        return
    output.console.print(f"[bold]{recipe.name}[/] — {recipe.description}  [dim]({recipe.origin}: {recipe.path})[/]", soft_wrap=True)
    if recipe.init_from is not None:
        output.console.print(f"init_from: {recipe.init_from}", markup=False)
    rows = [[r["key"], r["value"], r["source"]] for r in resolved.described()]
    output.print_table(f"Settings for stage {resolved.settings.stage} with profile {resolved.profile.name}", ["key", "value", "source"], rows)


@app.command("cp")
def copy(
    name: RecipeArgument,
    destination: Annotated[Path, typer.Argument(help="File to write, or a folder to write NAME.yaml in.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Copy a recipe to edit it, then train with `--recipe PATH` (like torchtune's `tune cp`).

    Example: vlmft recipes cp stage1 my_stage1.yaml && vlmft train --recipe my_stage1.yaml --data robovqa
    """
    from vlmft_cli.recipes import copy_recipe

    target = copy_recipe(name, destination, force=force)
    output.console.print(f"wrote {target}", markup=False, soft_wrap=True)
