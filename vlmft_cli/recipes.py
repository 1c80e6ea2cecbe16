"""Recipes: named config files of a curriculum stage, found like profiles.

A recipe is a YAML file of settings keys (what `--config` takes) with two more keys of its own:
`description` (one line for `vlmft recipes list`) and `init_from` (stage 2's starting point, what
`vlmft train --init-from` takes). `--recipe` takes a name or a path. Names are looked up, first match
wins, in the user recipe folder (`~/.config/vlmft/recipes/NAME.yaml`), then in packages registered under
the `vlmft.recipes` entry-point group (the built-ins are one of them). In the settings' precedence a
recipe sits right above the profile: stage defaults < profile < recipe < config file < VLMFT_* < flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmft_cli import plugins
from vlmft_cli.errors import ConfigError
from vlmft_cli.paths import user_recipes_dir
from vlmft_cli.profiles import yaml_error_text

RECIPE_SUFFIXES = (".yaml", ".yml")
#: Keys of a recipe file that are not settings.
RECIPE_KEYS = ("description", "init_from")


@dataclass(frozen=True)
class Recipe:
    name: str
    origin: str  # "built-in (vlmft 0.1.0)", "user folder …", "file …"
    path: str
    text: str
    description: str
    settings: dict[str, Any]  # the settings keys it sets (validated when resolved, naming the recipe)
    init_from: str | None

    @property
    def source(self) -> str:
        """How the settings sources name this recipe."""
        return f"recipe {self.name} ({self.path})"


def parse_recipe(text: str, *, name: str, origin: str, path: str) -> Recipe:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {yaml_error_text(exc)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must hold a mapping of settings, not {type(raw).__name__}")
    description, init_from = raw.pop("description", ""), raw.pop("init_from", None)
    if not isinstance(description, str):
        raise ConfigError(f"recipe {path}: description must be text")
    if init_from is not None and not isinstance(init_from, str):
        raise ConfigError(f"recipe {path}: init_from must be a checkpoint, a run or 'none'")
    return Recipe(name, origin, path, text, description, raw, init_from)


def available_recipes() -> dict[str, plugins.PackagedFile]:
    """Every recipe name and where it comes from (a user recipe replaces a packaged one of its name)."""
    return plugins.named_files("recipes", RECIPE_SUFFIXES, user_recipes_dir(), "recipe")


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by name, or from a file when given a path."""
    as_path = Path(name_or_path).expanduser()
    if as_path.suffix in RECIPE_SUFFIXES or "/" in name_or_path or "\\" in name_or_path:
        try:
            text = as_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"recipe file not found: {name_or_path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read recipe {name_or_path}: {getattr(exc, 'strerror', None) or exc}") from None
        return parse_recipe(text, name=as_path.stem, origin=f"file {as_path}", path=str(as_path))
    candidates = available_recipes()
    candidate = candidates.get(name_or_path)
    if candidate is None:
        raise ConfigError(f"unknown recipe {name_or_path!r} (known: {', '.join(candidates) or 'none'})", hint="vlmft recipes list")
    return parse_recipe(candidate.read(), name=candidate.name, origin=candidate.origin, path=candidate.path)


def copy_recipe(name_or_path: str, destination: Path, *, force: bool = False) -> Path:
    """Write the recipe's file, comments included, to `destination` (a file, or a folder to put NAME.yaml
    in); an existing file is kept unless `force`."""
    from vlmft_cli.fsutil import atomic_write_text

    recipe = load_recipe(name_or_path)
    target = destination / f"{recipe.name}.yaml" if destination.is_dir() else destination
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise ConfigError(f"folder {target.parent} does not exist")
    atomic_write_text(target, recipe.text)
    return target
