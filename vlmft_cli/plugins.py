"""Finding plugins through entry points, for every extension kind.

Groups: `vlmft.models` (model backends, see `vlmft_cli.model_backend`), `vlmft.attention` (attention
backends, see `vlmft_cli.attention`), `vlmft.profiles` (packages of profile files) and `vlmft.recipes`
(packages of recipe files). Built-ins are
registered by vlmft's own distribution exactly as a third party would register theirs.

`VLMFT_LOAD_PLUGINS`, when set, is a comma-separated list of distribution or plugin names: only those
model and attention plugins load (code). Profile and recipe packages are data, YAML files, and always
load, so limiting the code plugins never hides the built-in profiles or recipes. A name in the list that no installed plugin
or distribution has is warned about (`VlmftWarning`, with the closest known name). A plugin that fails to
import is reported as broken with its error; the rest keep working.
"""

from __future__ import annotations

import difflib
import os
import traceback
import warnings
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from vlmft_cli.errors import PluginError, VlmftWarning

Kind = Literal["models", "attention", "profiles", "recipes"]
GROUPS: dict[str, str] = {"models": "vlmft.models", "attention": "vlmft.attention", "profiles": "vlmft.profiles", "recipes": "vlmft.recipes"}

#: The environment variable that limits which plugins load, and the kinds it limits (code, not data).
LOAD_PLUGINS_ENV = "VLMFT_LOAD_PLUGINS"
LIMITED_KINDS = frozenset({"models", "attention"})


@dataclass
class PluginInfo:
    kind: str
    name: str
    target: str  # the entry point's "module:attr"
    distribution: str
    version: str
    obj: Any = None  # the loaded object (an instance for classes), None when broken
    error: str | None = None
    error_detail: str | None = None

    @property
    def broken(self) -> bool:
        return self.error is not None


def _distribution(ep: EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "unknown"


def allow_list(allow: str | None) -> set[str] | None:
    """The names in a `VLMFT_LOAD_PLUGINS` value (None: the variable is not set, everything loads)."""
    if allow is None:
        return None
    return {part.strip() for part in allow.split(",") if part.strip()}


@cache
def _warn_unknown_allowed(allow: str) -> None:
    """Warn once per value about names in `VLMFT_LOAD_PLUGINS` that match no plugin and no distribution."""
    known: set[str] = set()
    for group in GROUPS.values():
        for ep in entry_points(group=group):
            known.update({ep.name, _distribution(ep)})
    for name in sorted((allow_list(allow) or set()) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        warnings.warn(
            f"{LOAD_PLUGINS_ENV} names {name!r}, which is no installed plugin or distribution ({guess}known: {', '.join(sorted(known))})",
            VlmftWarning,
            stacklevel=2,
        )


def _load(kind: str, ep: EntryPoint) -> PluginInfo:
    distribution = _distribution(ep)
    version = ep.dist.version if ep.dist is not None else "unknown"
    info = PluginInfo(kind=kind, name=ep.name, target=ep.value, distribution=distribution, version=version)
    try:
        loaded = ep.load()
        info.obj = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:  # a broken plugin must not take the CLI down
        info.error = f"{type(exc).__name__}: {exc}"
        info.error_detail = traceback.format_exc()
    return info


def discover(kind: Kind) -> tuple[PluginInfo, ...]:
    """Every plugin of a kind that `VLMFT_LOAD_PLUGINS` allows (profile packages: all), loaded (broken
    ones carry their error)."""
    allow = os.environ.get(LOAD_PLUGINS_ENV)
    if allow is not None:
        _warn_unknown_allowed(allow)
    return _discover_once(kind, allow)


@cache
def _discover_once(kind: str, allow: str | None) -> tuple[PluginInfo, ...]:
    names = allow_list(allow) if kind in LIMITED_KINDS else None
    found = []
    for ep in entry_points(group=GROUPS[kind]):
        if names is None or ep.name in names or _distribution(ep) in names:
            found.append(_load(kind, ep))
    return tuple(sorted(found, key=lambda info: (info.name, info.distribution)))


@dataclass(frozen=True)
class PackagedFile:
    """A data file (a profile, a recipe) shipped in a package registered under a data group."""

    name: str  # the file name without its suffix
    origin: str  # "built-in (vlmft 0.1.0)" or "plugin (mydist 1.0)"
    path: str  # "package/file.yaml"
    read: Any  # () -> str


def packaged_files(kind: Kind, suffixes: tuple[str, ...]) -> list[PackagedFile]:
    """The files ending in `suffixes` in every working package of a data kind (`profiles`, `recipes`)."""
    import importlib.resources

    found: list[PackagedFile] = []
    for info in discover(kind):
        package = getattr(info.obj, "__name__", None)
        if info.error or package is None:
            continue
        origin = f"{'built-in' if info.distribution == 'vlmft' else 'plugin'} ({info.distribution} {info.version})"
        for entry in sorted(importlib.resources.files(package).iterdir(), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith(suffixes):
                found.append(PackagedFile(entry.name.rsplit(".", 1)[0], origin, f"{package}/{entry.name}", entry.read_text))
    return found


def named_files(kind: Kind, suffixes: tuple[str, ...], user_folder: Any, noun: str) -> dict[str, PackagedFile]:
    """Every file of a data kind by name: the packaged ones (two distributions shipping a name is a
    `ConfigError` naming both), then those in `user_folder`, which replace a packaged one of their name."""
    chosen: dict[str, PackagedFile] = {}
    for found in packaged_files(kind, suffixes):
        previous = chosen.get(found.name)
        if previous is not None:
            from vlmft_cli.errors import ConfigError

            raise ConfigError(f"{noun} {found.name!r} is shipped twice: by {previous.origin} and by {found.origin}")
        chosen[found.name] = found
    if user_folder.is_dir():
        for path in sorted(user_folder.iterdir()):
            if path.suffix in suffixes and path.is_file():
                chosen[path.stem] = PackagedFile(path.stem, f"user folder {user_folder}", str(path), path.read_text)
    return dict(sorted(chosen.items()))


def reset_cache() -> None:
    """Forget discovered plugins (after installing one, or in tests)."""
    _discover_once.cache_clear()
    _warn_unknown_allowed.cache_clear()


def get(kind: Kind, name: str) -> Any:
    """The plugin object registered as `name`; a `PluginError` names the problem otherwise."""
    matches = [info for info in discover(kind) if info.name == name]
    if not matches:
        known = ", ".join(sorted({info.name for info in discover(kind)})) or "none"
        raise PluginError(f"unknown {kind} plugin {name!r} (known: {known})", hint="vlmft plugins list")
    if len(matches) > 1:
        owners = " and ".join(f"{info.distribution} {info.version}" for info in matches)
        raise PluginError(f"{kind} plugin {name!r} is registered twice: by {owners}")
    info = matches[0]
    if info.broken:
        raise PluginError(f"{kind} plugin {name!r} from {info.distribution} failed to load: {info.error}")
    return info.obj


def loaded(kind: Kind) -> list[Any]:
    """Every working plugin object of a kind."""
    return [info.obj for info in discover(kind) if not info.broken]
