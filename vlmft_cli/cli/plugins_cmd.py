"""`vlmft plugins`: what is installed in each entry-point group and whether it can run here."""

from __future__ import annotations

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption

app = typer.Typer(name="plugins", help="Model, attention and profile plugins.", no_args_is_help=True)


@app.command("list")
def list_plugins(json: JsonOption = False) -> None:
    """List every plugin with its distribution, version and availability.

    Example: vlmft plugins list --json
    """
    from vlmft_cli.plugin_status import statuses_as_dicts

    rows = statuses_as_dicts()
    if json:
        output.print_json(rows)
        return
    output.print_table(
        "Plugins",
        ["group", "name", "distribution", "status", "reason"],
        [[r["group"], r["name"], f"{r['distribution']} {r['version']}", r["status"], r["reason"]] for r in rows],
    )
