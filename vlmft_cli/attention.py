"""The attention-backend protocol (`vlmft.attention` entry points) and choosing one with a fallback.

A backend names the `attn_implementation` it hands transformers and says whether it can run here and
why not. It may also say why a model backend's models cannot run it (`model_obstacle(model_backend)`,
optional: a string, or None when they can). A run that asks for a backend unavailable here, or for its
model, falls back to `sdpa` with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from vlmft_cli import plugins
from vlmft_cli.reporting import NullReporter, Reporter

FALLBACK = "sdpa"


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@runtime_checkable
class AttentionBackend(Protocol):
    name: str
    description: str
    #: The value passed to transformers as `attn_implementation`.
    attn_implementation: str
    #: Whether it honours a caller-built 4-D (block) attention mask, as shared-prefix packing needs.
    supports_block_mask: bool

    def availability(self) -> Availability:
        """Whether it can run on this machine, and if not, why (package missing, no CUDA, arch)."""
        ...

    def setup(self) -> None:
        """Anything to do before a model is built with it (e.g. registering a kernel)."""
        ...


def model_availability(backend: AttentionBackend, model_backend: Any) -> Availability:
    """Whether `backend` can run `model_backend`'s models, by its optional `model_obstacle`."""
    obstacle = getattr(backend, "model_obstacle", None)
    reason = obstacle(model_backend) if callable(obstacle) else None
    return Availability.no(reason) if reason else Availability.yes()


def select_attention(name: str, reporter: Reporter | None = None, model_backend: Any = None) -> AttentionBackend:
    """The named backend if available here (and for `model_backend`'s models when given), else `sdpa`
    with a warning saying why."""
    reporter = reporter or NullReporter()
    backend: AttentionBackend = plugins.get("attention", name)
    status = backend.availability()
    if status.available and model_backend is not None:
        status = model_availability(backend, model_backend)
    if status.available:
        backend.setup()
        return backend
    if name == FALLBACK:
        from vlmft_cli.errors import PluginError

        raise PluginError(f"attention backend {FALLBACK} is unavailable: {status.reason}")
    reporter.warning(f"attention backend {name} is unavailable ({status.reason}); falling back to {FALLBACK}")
    return select_attention(FALLBACK, reporter, model_backend)
