"""Saving a backend's processor as the standard Hugging Face files that transformers and vLLM read.

Composite processors (`InternVLProcessor` and friends) cannot always `save_pretrained` without
torchvision, so the tokenizer (with its chat template, `chat_template.jinja`) and the image processor
(`preprocessor_config.json`) are saved separately whenever the processor has them; the backend's
`load_processor(folder, home)` composes them again, and `AutoTokenizer`/`AutoImageProcessor` load them
with the PIL image processors. The composite's own files — `processor_config.json` (InternVL's
`image_seq_length`) and `video_preprocessor_config.json` — are copied from the base model's folder when
it has them; otherwise `processor_config.json` is written from the processor's values of the arguments
the composite transformers class takes (so vLLM's `AutoProcessor`, which has torchvision, builds the same
processor). `AutoProcessor.from_pretrained` itself needs torchvision here: transformers' composite VLM
processors always build a video processor, and those exist only for torchvision.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

from vlmft_cli.fsutil import atomic_write_text

PIECES = ("tokenizer", "image_processor")
PROCESSOR_CONFIG = "processor_config.json"
#: Files of the composite processor that the pieces do not write; copied from the base model's folder.
COMPOSITE_FILES = (PROCESSOR_CONFIG, "video_preprocessor_config.json", "chat_template.json", "chat_template.jinja")
_SUB_PROCESSORS = {"self", "image_processor", "tokenizer", "video_processor", "feature_extractor", "chat_template", "kwargs", "args"}


def model_type_of(config: Path | None) -> str | None:
    """`model_type` from a model's config.json, if there is one and it says."""
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") if config else None
    except (OSError, ValueError, AttributeError):
        return None


def composite_arguments(processor: Any, model_type: str | None) -> dict[str, Any]:
    """The processor's values of the plain arguments transformers' composite processor for `model_type`
    takes (InternVL: `image_seq_length`), for processor_config.json."""
    if not model_type:
        return {}
    try:
        import transformers
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        composite = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "", None)
        names = set(inspect.signature(composite.__init__).parameters) - _SUB_PROCESSORS if composite else set()
    except (ImportError, TypeError, ValueError):
        return {}
    values = {name: getattr(processor, name) for name in sorted(names) if hasattr(processor, name)}
    return {name: value for name, value in values.items() if isinstance(value, (bool, int, float, str))}


def source_file(source: str | Path | None, name: str) -> Path | None:
    """File `name` of the base model: in its folder, or for a hub id in the local Hugging Face cache."""
    if source is None:
        return None
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    try:
        import huggingface_hub

        cached = huggingface_hub.try_to_load_from_cache(str(source), name)
    except Exception:  # noqa: BLE001 - not a hub id, or no cache: nothing to copy
        return None
    return Path(cached) if isinstance(cached, str) else None


def save_processor(processor: Any, directory: Path, *, source: str | Path | None = None, model_type: str | None = None) -> list[str]:
    """Write the processor's files into `directory`; returns the pieces saved. `source` is the base model
    (a folder, or a hub id found in the local cache) whose composite-processor files are copied;
    `model_type` its config's (default: read from `source`)."""
    pieces = [(name, getattr(processor, name, None)) for name in PIECES]
    present = [(name, piece) for name, piece in pieces if piece is not None]
    if not present:
        processor.save_pretrained(str(directory))
        return ["processor"]
    for _, piece in present:
        piece.save_pretrained(str(directory))
    saved = [name for name, _ in present]
    for name in COMPOSITE_FILES:
        found = source_file(source, name)
        if found is not None and not (directory / name).exists():
            shutil.copyfile(found, directory / name)
            saved.append(name)
    if not (directory / PROCESSOR_CONFIG).exists():
        arguments = composite_arguments(processor, model_type or model_type_of(source_file(source, "config.json")))
        if arguments:
            atomic_write_text(directory / PROCESSOR_CONFIG, json.dumps(arguments, indent=2, sort_keys=True) + "\n")
            saved.append(PROCESSOR_CONFIG)
    return saved
