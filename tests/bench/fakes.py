"""Throwaway plugins for the benchmark tests: registered by patching plugin discovery, never installed.

`TinyArchBackend` is InternVL3's backend whose only "real architecture" is the tiny model's config, so the
`--random-init` path runs end to end in a second. `UnknownKernelAttention` names an implementation
transformers does not have; `OffAttention` is never available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vlmft_cli import plugins
from vlmft_cli.attention import Availability
from vlmft_internvl3 import InternVL3Backend

TINY_ARCH = "Tiny-Arch"


class TinyArchBackend:
    name = "tinyarch"
    description = "InternVL3 with the tiny model's config as its only architecture"

    def __init__(self, home: Path) -> None:
        self._base = InternVL3Backend()
        self._home = home

    def handles(self, name_or_path: str) -> bool:
        return name_or_path == TINY_ARCH

    def architecture_variants(self) -> list[str]:
        return [TINY_ARCH]

    def architecture_config(self, variant: str) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self._base.resolve("tiny-internvl3", self._home))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


class UnknownKernelAttention:
    name = "no-such-kernel"
    description = "an implementation transformers lacks"
    attn_implementation = "no_such_attention"
    supports_block_mask = False

    def availability(self) -> Availability:
        return Availability.yes()

    def setup(self) -> None:
        pass


class OffAttention(UnknownKernelAttention):
    name = "off"
    attn_implementation = "sdpa"

    def availability(self) -> Availability:
        return Availability.no("switched off for the test")


def register(monkeypatch: pytest.MonkeyPatch, kind: str, *objects: Any, broken: str | None = None) -> None:
    """Make `plugins.discover(kind)` also return `objects` (and a broken plugin named `broken`)."""
    real = plugins.discover
    extra = [plugins.PluginInfo(kind, obj.name, "tests:fake", "tests", "0", obj=obj) for obj in objects]
    if broken:
        extra.append(plugins.PluginInfo(kind, broken, "tests:missing", "tests", "0", error="ImportError: no module named missing"))

    def discover(wanted: str) -> tuple[plugins.PluginInfo, ...]:
        found = real(wanted)  # type: ignore[arg-type]
        return (*found, *extra) if wanted == kind else found

    monkeypatch.setattr(plugins, "discover", discover)
