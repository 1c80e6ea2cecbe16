"""Where vlmft looks for things outside a run: the user config folder.

Runs and checkpoints are found through `vlmft_cli.runs`; settings (including VLMFT_HOME) through
`vlmft_cli.settings`.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_config_dir() -> Path:
    """`$VLMFT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/vlmft`, else `~/.config/vlmft`."""
    explicit = os.environ.get("VLMFT_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "vlmft"


def user_profiles_dir() -> Path:
    return user_config_dir() / "profiles"



def user_recipes_dir() -> Path:
    return user_config_dir() / "recipes"
