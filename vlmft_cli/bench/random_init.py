"""A real architecture with random weights, built through the training code (`--random-init`).

`RandomInitBackend` is the model backend as training sees it, except that `load` builds the
architecture's config with random weights directly on the device instead of reading a checkpoint; given
to `lora_model.build_model`, the model gets exactly training's freezing, gradient checkpointing and
LoRA. Nothing is downloaded.

The processor is the backend's tiny model's (its tokenizer and image processor), re-written for the
architecture: its frames are resized to the vision tower's input size, so a frame costs the real number
of tokens (256 for InternVL3's 448-px tiles), and the architecture's config takes the tiny tokenizer's
special-token ids (`*_token_id`), so the image placeholders the processor writes are the ones the model
looks for. Ids are below the real vocabulary size, and no size, depth or width changes. A family whose
vision config has no fixed input size (Qwen's dynamic resolution) gets the tiny processor without its
pinned pixel count, so the family's real frame size applies.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmft_cli.errors import ConfigError
from vlmft_cli.model_backend import LoadedModel, LoadOptions, ModelBackend

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: Files of a model folder that are not the processor's.
NOT_PROCESSOR = ("config.json", "vlmft_tiny.json", "generation_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class RandomInitBackend:
    """`backend`, except that `load` builds `config` with random weights on `device` (see the module)."""

    def __init__(self, backend: ModelBackend, config: PretrainedConfig, processor: Any, device: str, *, seed: int = 0, label: str = "") -> None:
        self._backend = backend
        self.config = config
        self.processor = processor
        self.device = device
        self.seed = seed
        self.label = label or "random init"

    def load(self, name_or_path: str, options: LoadOptions, home: Path) -> LoadedModel:
        import torch
        from transformers import AutoModelForImageTextToText

        from vlmft_cli.model_loading import no_progress_bars
        from vlmft_cli.runtime import dtype_for

        if options.quantization != "none":
            raise ConfigError(
                f"--random-init builds the model in memory, and {options.quantization} quantization needs saved weights",
                hint="use a profile without quantization for the step benchmark",
            )
        torch.manual_seed(self.seed)
        with no_progress_bars(), torch.device(self.device):
            model = AutoModelForImageTextToText.from_config(self.config, dtype=dtype_for(options.precision), attn_implementation=options.attn_implementation)
        return LoadedModel(model=model, processor=self.processor, source=self.label)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def _special_token_ids(config: Any) -> dict[str, int]:
    document = config.to_dict()
    return {key: value for key, value in document.items() if key.endswith("_token_id") and isinstance(value, int)}


def _vision_size(config: Any) -> tuple[int, int] | None:
    size = getattr(getattr(config, "vision_config", None), "image_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def _resize_processor(folder: Path, size: tuple[int, int]) -> None:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return
    document = json.loads(path.read_text())
    if isinstance(document.get("size"), dict) and {"height", "width"} <= set(document["size"]):
        document["size"] = {"height": size[0], "width": size[1]}
        path.write_text(json.dumps(document, indent=2))


def _unpin_processor(folder: Path) -> None:
    """Dynamic-resolution families: drop a tiny model's pinned pixel count, so the processor and the
    backend fall back to the family's real frame size."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return
    document = json.loads(path.read_text())
    size = document.get("size")
    if isinstance(size, dict) and size.get("shortest_edge") is not None and size.get("shortest_edge") == size.get("longest_edge"):
        del document["size"]
        path.write_text(json.dumps(document, indent=2))


def architecture_processor(backend: ModelBackend, config: PretrainedConfig, home: Path) -> tuple[PretrainedConfig, Any]:
    """(`config` with the tiny tokenizer's special-token ids, a processor for it); see the module docstring."""
    from transformers import AutoConfig

    if not backend.tiny_names():
        raise ConfigError(f"model backend {backend.name} has no tiny model whose processor --random-init could use")
    tiny = Path(backend.resolve(backend.tiny_names()[0], home))
    config = copy.deepcopy(config)
    for key, value in _special_token_ids(AutoConfig.from_pretrained(tiny, local_files_only=True)).items():
        setattr(config, key, value)
    with tempfile.TemporaryDirectory(prefix="vlmft-processor-") as temp:
        folder = Path(temp)
        for path in tiny.iterdir():
            if path.is_file() and path.name not in NOT_PROCESSOR and not path.name.endswith(WEIGHT_SUFFIXES):
                shutil.copy2(path, folder / path.name)
        config.to_json_file(str(folder / "config.json"))
        size = _vision_size(config)
        if size is not None:
            _resize_processor(folder, size)
        else:
            _unpin_processor(folder)
        processor = backend.load_processor(str(folder), home)
    return config, processor
