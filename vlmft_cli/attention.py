"""The attention-backend protocol (`vlmft.attention` entry points) and choosing one with a fallback.

A backend names the `attn_implementation` it hands transformers and says whether it can run here and
why not. A run that asks for an unavailable backend falls back to `sdpa` with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


def select_attention(name: str, reporter: Reporter | None = None) -> AttentionBackend:
    """The named backend if available here, else `sdpa` with a warning saying why."""
    reporter = reporter or NullReporter()
    backend: AttentionBackend = plugins.get("attention", name)
    status = backend.availability()
    if status.available:
        backend.setup()
        return backend
    if name == FALLBACK:
        from vlmft_cli.errors import PluginError

        raise PluginError(f"attention backend {FALLBACK} is unavailable: {status.reason}")
    reporter.warning(f"attention backend {name} is unavailable ({status.reason}); falling back to {FALLBACK}")
    return select_attention(FALLBACK, reporter)
