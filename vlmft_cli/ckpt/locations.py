"""Default folders for checkpoint commands: the `out` and `home` settings, resolved with the one
precedence order of `vlmft_cli.settings` (so `VLMFT_OUT` and `VLMFT_HOME` apply)."""

from __future__ import annotations

from pathlib import Path

from vlmft_cli.settings import resolve_settings


def default_out() -> Path:
    """The experiments folder (`out` setting, default `experiments`)."""
    return resolve_settings().settings.out


def default_home() -> Path:
    """The vlmft cache folder where tiny models live (`home` setting, VLMFT_HOME)."""
    return resolve_settings().settings.home
