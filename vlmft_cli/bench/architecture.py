"""Real architectures through the model backends: which backend knows a variant, its config with fewer
layers, and the attention head layout of its language model.

A name is either an architecture variant some backend lists (`architecture_variants`, matched without
regard to case, e.g. "InternVL3-8B") or a model its backend can resolve locally (e.g. "tiny-internvl3"),
whose config is read from disk. Nothing is downloaded and no backend is named here.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmft_cli import plugins
from vlmft_cli.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from vlmft_cli.model_backend import ModelBackend

#: Sub-configs whose depth `--layers` reduces, and the fields that hold a depth.
LAYERED_SECTIONS = ("text_config", "vision_config")
DEPTH_FIELDS = ("num_hidden_layers", "depth")


@dataclass(frozen=True)
class HeadLayout:
    """Attention heads of a language model: query heads, key/value heads (GQA) and head dimension."""

    heads: int
    kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        if min(self.heads, self.kv_heads, self.head_dim) < 1:
            raise ConfigError(f"head layout needs positive sizes, got {self}")
        if self.heads % self.kv_heads:
            raise ConfigError(f"{self.heads} query heads are not a multiple of {self.kv_heads} key/value heads")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def find_variant(name: str) -> tuple[ModelBackend, str] | None:
    """The backend listing `name` as an architecture variant, and the variant's exact spelling."""
    for backend in plugins.loaded("models"):
        for variant in backend.architecture_variants():
            if variant.lower() == name.lower():
                return backend, variant
    return None


def known_variants() -> list[str]:
    return [variant for backend in plugins.loaded("models") for variant in backend.architecture_variants()]


def model_config(name: str, home: Path) -> PretrainedConfig:
    """The config of an architecture variant, or of a model its backend resolves to a local folder."""
    from transformers import AutoConfig

    from vlmft_cli.backends import backend_for

    found = find_variant(name)
    if found is not None:
        backend, variant = found
        return backend.architecture_config(variant)
    source = backend_for(name).resolve(name, home)
    try:
        return AutoConfig.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        raise ConfigError(
            f"no config for {name!r} here ({exc}); pass an architecture variant ({', '.join(known_variants())}) or a local model folder"
        ) from None


def head_layout(config: PretrainedConfig) -> HeadLayout:
    """The language model's head layout from a (multimodal or text) config."""
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return HeadLayout(heads, kv_heads, head_dim)


def resolve_layout(model: str, *, heads: int | None = None, kv_heads: int | None = None, head_dim: int | None = None, home: Path) -> tuple[HeadLayout, str]:
    """The head layout to benchmark, and where it came from: all three sizes when given, else `model`'s
    language model with any given size replacing its own."""
    if heads is not None and kv_heads is not None and head_dim is not None:
        return HeadLayout(heads, kv_heads, head_dim), "--heads/--kv-heads/--head-dim"
    base = head_layout(model_config(model, home))
    given = {name: value for name, value in (("heads", heads), ("kv_heads", kv_heads), ("head_dim", head_dim)) if value is not None}
    source = model + (f" with {', '.join(f'{k}={v}' for k, v in given.items())}" if given else "")
    return HeadLayout(**{**base.as_dict(), **given}), source


def _reduce_section(section: Any, layers: int) -> None:
    for name in DEPTH_FIELDS:
        if isinstance(getattr(section, name, None), int):
            setattr(section, name, min(getattr(section, name), layers))
    if isinstance(getattr(section, "layer_types", None), list):
        section.layer_types = section.layer_types[:layers]
    for name, value in list(vars(section).items()):
        # Layer indexes (full-attention blocks, deepstack taps) must stay inside the shallower stack.
        if name.endswith("indexes") and isinstance(value, list):
            setattr(section, name, [index for index in value if index < layers])


def with_layers(config: PretrainedConfig, layers: int | None) -> PretrainedConfig:
    """A copy of `config` whose text and vision stacks have at most `layers` layers (widths unchanged)."""
    config = copy.deepcopy(config)
    if layers is None:
        return config
    if layers < 1:
        raise ConfigError("--layers must be at least 1")
    sections = [getattr(config, name) for name in LAYERED_SECTIONS if getattr(config, name, None) is not None]
    for section in sections or [config]:
        _reduce_section(section, layers)
    return config
