"""The root `vlmft` command: global flags, error handling, and the command groups mounted on it."""

from __future__ import annotations

import os
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vlmft_cli import __version__
from vlmft_cli.cli import output
from vlmft_cli.errors import VlmftError

DEBUG_ENV = "VLMFT_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")


class VlmftGroup(TyperGroup):
    """Turns errors a user can cause into one line and exit code 2 (a traceback with --debug)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VlmftError as exc:
            if debug_enabled():
                output.err_console.print(traceback.format_exc(), markup=False)
            output.error(str(exc), exc.hint or f"set {DEBUG_ENV}=1 or pass --debug for the traceback")
            raise typer.Exit(2) from None


app = typer.Typer(
    name="vlmft",
    cls=VlmftGroup,
    help="Fine-tune vision-language models on robot video QA (RoboVQA) through a two-stage curriculum.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _version_callback(value: bool) -> None:
    if value:
        output.console.print(f"vlmft {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """vlmft: `data` → `train --stage 1` → `train --stage 2` → `eval`, with `bench` and `ckpt` around them."""
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _mount() -> None:
    from vlmft_cli.cli import (
        bench,
        ckpt_cmd,
        data,
        eval_cmd,
        plugins_cmd,
        profiles_cmd,
        report_cmd,
        resume_cmd,
        train_cmd,
    )

    app.add_typer(data.app)
    app.command("train")(train_cmd.train)
    app.command("report")(report_cmd.report)
    ckpt_cmd.app.command("resume")(resume_cmd.resume)
    for module in (eval_cmd, ckpt_cmd, bench, plugins_cmd, profiles_cmd):
        app.add_typer(module.app)


_mount()


def main() -> None:
    app()
