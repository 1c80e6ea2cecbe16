"""Choosing the model backend for a model name, hub id or local folder."""

from __future__ import annotations

from vlmft_cli import plugins
from vlmft_cli.errors import PluginError
from vlmft_cli.model_backend import ModelBackend


def model_backend(name: str) -> ModelBackend:
    """A model backend by its plugin name (e.g. `internvl3`)."""
    return plugins.get("models", name)


def backend_for(model: str, backend: str | None = None) -> ModelBackend:
    """The backend named by `backend`, else the one backend that claims `model`. A `backend` that does not
    claim `model` while another one does (`--backend qwen3_vl` on an InternVL3 run) is refused: it could
    only fail later, after looking for the model where it is not."""
    if backend:
        chosen = model_backend(backend)
        if not chosen.handles(model):
            owners = [other.name for other in plugins.loaded("models") if other.name != chosen.name and other.handles(model)]
            if owners:
                raise PluginError(
                    f"model {model!r} belongs to the {owners[0]} backend, not to --backend {backend}",
                    hint=f"leave out --backend, or pass --backend {owners[0]}",
                )
        return chosen
    claims = [candidate for candidate in plugins.loaded("models") if candidate.handles(model)]
    if not claims:
        known = ", ".join(b.name for b in plugins.loaded("models")) or "none"
        raise PluginError(f"no model backend recognises {model!r} (installed: {known}); pass --backend", hint="vlmft plugins list")
    if len(claims) > 1:
        names = ", ".join(b.name for b in claims)
        raise PluginError(f"several model backends claim {model!r} ({names}); pass --backend to choose")
    return claims[0]
