"""Finding plugins through entry points, for every extension kind.

Groups: `vlmft.models` (model backends, see `vlmft_cli.model_backend`), `vlmft.attention` (attention
backends, see `vlmft_cli.attention`) and `vlmft.profiles` (packages of profile files). Built-ins are
registered by vlmft's own distribution exactly as a third party would register theirs.

`VLMFT_LOAD_PLUGINS`, when set, is a comma-separated list of distribution or plugin names: only those
load. A plugin that fails to import is reported as broken with its error; the rest keep working.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from vlmft_cli.errors import PluginError

Kind = Literal["models", "attention", "profiles"]
GROUPS: dict[str, str] = {"models": "vlmft.models", "attention": "vlmft.attention", "profiles": "vlmft.profiles"}


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


def _allowed(ep: EntryPoint, distribution: str) -> bool:
    allow = os.environ.get("VLMFT_LOAD_PLUGINS")
    if allow is None:
        return True
    names = {part.strip() for part in allow.split(",") if part.strip()}
    return distribution in names or ep.name in names


def _load(kind: str, ep: EntryPoint) -> PluginInfo:
    dist = ep.dist
    distribution = dist.metadata["Name"] if dist is not None else "unknown"
    version = dist.version if dist is not None else "unknown"
    info = PluginInfo(kind=kind, name=ep.name, target=ep.value, distribution=distribution, version=version)
    try:
        loaded = ep.load()
        info.obj = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:  # a broken plugin must not take the CLI down
        info.error = f"{type(exc).__name__}: {exc}"
        info.error_detail = traceback.format_exc()
    return info


def discover(kind: Kind) -> tuple[PluginInfo, ...]:
    """Every plugin of a kind that `VLMFT_LOAD_PLUGINS` allows, loaded (broken ones carry their error)."""
    return _discover_once(kind, os.environ.get("VLMFT_LOAD_PLUGINS"))


@cache
def _discover_once(kind: str, _allow: str | None) -> tuple[PluginInfo, ...]:
    found = []
    for ep in entry_points(group=GROUPS[kind]):
        distribution = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
        if _allowed(ep, distribution):
            found.append(_load(kind, ep))
    return tuple(sorted(found, key=lambda info: (info.name, info.distribution)))


def reset_cache() -> None:
    """Forget discovered plugins (after installing one, or in tests)."""
    _discover_once.cache_clear()


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
