"""The root `vlmft` command: global flags, error handling, and the command groups mounted on it.

One rule for errors, in every command:

- an error the user can cause or fix: a bad option, value or choice (click's usage errors), a
  `VlmftError`, or an `OSError` (a path that cannot be read or created, a full disk), prints ONE line on
  stderr, `Error: what — what to do`, and exits with code 2;
- anything else is unexpected (a bug in vlmft or a library): one line naming it and saying that
  `--debug` shows the traceback, exit code 1; with `--debug` (or `VLMFT_DEBUG=1`) the traceback itself.

`VlmftWarning`s (a misspelt `VLMFT_*` variable, an unknown `VLMFT_LOAD_PLUGINS` name) print once each as
`Warning: …` on stderr.
"""

from __future__ import annotations

import errno
import os
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vlmft_cli import __version__
from vlmft_cli.cli import output
from vlmft_cli.errors import VlmftError, VlmftWarning

try:  # typer vendors click from 0.2x on; older ones use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError  # type: ignore[no-redef]

DEBUG_ENV = "VLMFT_DEBUG"
USER_ERROR_EXIT = 2
UNEXPECTED_ERROR_EXIT = 1

#: Folder settings whose `VLMFT_*` value is named when creating or writing under it fails.
FOLDER_VARIABLES = ("VLMFT_HOME", "VLMFT_OUT")


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")


def _is_help(exc: Exception) -> bool:
    """`vlmft data` without a subcommand raises a usage error that shows the help: leave it to typer."""
    return type(exc).__name__ == "NoArgsIsHelpError"


def _usage_error(exc: UsageError) -> int:
    ctx = getattr(exc, "ctx", None)
    output.error(exc.format_message(), f"see '{ctx.command_path} --help'" if ctx is not None else None)
    return USER_ERROR_EXIT


def os_error_text(exc: OSError) -> str:
    """`cannot use /proc/x/y: No such file or directory (VLMFT_HOME=/proc/x)`: the path, the reason, and
    the `VLMFT_*` folder setting it lies under, if one is set."""
    names = [str(name) for name in (exc.filename, exc.filename2) if name]
    reason = exc.strerror or str(exc) or type(exc).__name__
    text = f"cannot use {' → '.join(names)}: {reason}" if names else reason
    for variable in FOLDER_VARIABLES:
        value = os.environ.get(variable)
        if value and names and _under(names[0], value):
            return f"{text} ({variable}={value})"
    return text


def _under(path: str, folder: str) -> bool:
    try:
        inner, outer = Path(path).expanduser().absolute(), Path(folder).expanduser().absolute()
    except (OSError, RuntimeError):
        return False
    return inner == outer or outer in inner.parents


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show each distinct `VlmftWarning` once as `Warning: …`; other warnings as Python shows them."""
    shown: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", VlmftWarning)
        previous = warnings.showwarning

        def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
            if not issubclass(category, VlmftWarning):
                previous(message, category, filename, lineno, file, line)
            elif str(message) not in shown:
                shown.add(str(message))
                output.warning(str(message))

        warnings.showwarning = show
        yield


class VlmftGroup(TyperGroup):
    """Applies the error rule of the module docstring to every command below the root."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:  # the root's own options (`vlmft --bogus`)
            if _is_help(exc):
                raise
            raise typer.Exit(_usage_error(exc)) from None

    def invoke(self, ctx: Any) -> Any:
        with _warnings_as_lines():
            try:
                return super().invoke(ctx)
            except UsageError as exc:
                if _is_help(exc):
                    raise
                raise typer.Exit(_usage_error(exc)) from None
            except VlmftError as exc:
                if debug_enabled():
                    output.err_console.print(traceback.format_exc(), markup=False)
                output.error(str(exc), exc.hint)
                raise typer.Exit(USER_ERROR_EXIT) from None
            except (typer.Exit, typer.Abort):
                raise
            except ClickException as exc:
                output.error(exc.format_message())
                raise typer.Exit(exc.exit_code) from None
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # output piped into `head`: typer closes quietly
                    raise
                if debug_enabled():
                    output.err_console.print(traceback.format_exc(), markup=False)
                output.error(os_error_text(exc))
                raise typer.Exit(USER_ERROR_EXIT) from None
            except Exception as exc:
                if debug_enabled():
                    raise
                output.error(
                    f"unexpected {type(exc).__name__}: {exc}",
                    f"this is a bug in vlmft or a library it uses; rerun with --debug (or {DEBUG_ENV}=1) for the traceback",
                )
                raise typer.Exit(UNEXPECTED_ERROR_EXIT) from None


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
    debug: Annotated[bool, typer.Option("--debug", help=f"Show the traceback of an error (also {DEBUG_ENV}=1). Without it an error is one line: exit code 2 for one you can fix, 1 for an unexpected one.")] = False,
) -> None:
    """vlmft: `data` → `train --stage 1` → `train --stage 2` → `eval`, with `bench` and `ckpt` around them."""
    if debug:
        os.environ[DEBUG_ENV] = "1"
    # TensorFlow (TFRecord reading only, no math) otherwise prints two lines on stderr when it loads, so an
    # error of a `data` command would not be the one line it is.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _mount() -> None:
    from vlmft_cli.cli import (
        bench,
        chat_cmd,
        ckpt_cmd,
        data,
        env_cmd,
        eval_cmd,
        plugins_cmd,
        profiles_cmd,
        recipes_cmd,
        report_cmd,
        resume_cmd,
        train_cmd,
    )

    app.add_typer(data.app)
    app.command("train")(train_cmd.train)
    app.command("chat")(chat_cmd.chat)
    app.command("report")(report_cmd.report)
    app.command("env")(env_cmd.env)
    ckpt_cmd.app.command("resume")(resume_cmd.resume)
    for module in (eval_cmd, ckpt_cmd, bench, plugins_cmd, profiles_cmd, recipes_cmd):
        app.add_typer(module.app)


_mount()


def main() -> None:
    app()
