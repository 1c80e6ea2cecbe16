"""Where vlmft looks for things outside a run: the user config folder and safe path joins.

Runs and checkpoints are found through `vlmft_cli.runs`; settings (including VLMFT_HOME) through
`vlmft_cli.settings`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmft_cli.errors import DataError


def user_config_dir() -> Path:
    """`$VLMFT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/vlmft`, else `~/.config/vlmft`."""
    explicit = os.environ.get("VLMFT_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "vlmft"


def user_profiles_dir() -> Path:
    return user_config_dir() / "profiles"


def safe_join(root: Path, relative: str, *, what: str = "path") -> Path:
    """`root / relative`, refusing absolute paths and anything (symlinks included) that resolves outside root."""
    if not relative or relative.startswith(("/", "\\")) or Path(relative).is_absolute() or (len(relative) > 1 and relative[1] == ":"):
        raise DataError(f"{what} {relative!r} must be relative to {root}")
    candidate = root / relative
    resolved_root = root.resolve()
    resolved = candidate.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise DataError(f"{what} {relative!r} escapes {root}")
    return candidate
