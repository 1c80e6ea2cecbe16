"""Exporting a checkpoint's adapter for sharing: adapter files, processor pieces and a model card.

The export loads with `PeftModel.from_pretrained(base, folder)` and with vLLM (`--enable-lora
--lora-modules name=folder`). It holds `adapter_model.safetensors` (a byte copy, checked against the
checkpoint's marker), `adapter_config.json`, the base model's tokenizer, chat template and image processor
(`processor_files`), and README.md; never optimizer, scheduler or RNG state. It is written beside the
destination and renamed into place only when complete.

`adapter_config.json` is the checkpoint's (checked against the marker) with two fields made servable:
`target_modules` becomes the list of the modules the weights adapt (read from the safetensors), because
vLLM matches target modules by their last name and cannot read vlmft's anchored regex, and PEFT matches
full names exactly, so the list adapts the same modules; `base_model_name_or_path` becomes the name the
base is known by (the hub id the run was given; a local folder's absolute path; for a tiny model, the
folder it was built in) rather than wherever training happened to load it from.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli.ckpt.base_model import adapter_config, base_model_for
from vlmft_cli.ckpt.listing import tree_size
from vlmft_cli.ckpt.model_card import CardFacts, render_model_card
from vlmft_cli.ckpt.processor_files import save_processor
from vlmft_cli.ckpt.staging import check_destination, staged_directory
from vlmft_cli.ckpt.verify import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from vlmft_cli.errors import CheckpointError
from vlmft_cli.fsutil import atomic_write_json, atomic_write_text, sha256_file
from vlmft_cli.reporting import NullReporter
from vlmft_cli.runs import CONFIG_FILE, RUN_FILE, Checkpoint, Run

ADAPTER_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
MODEL_CARD = "README.md"


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and which files it holds."""

    checkpoint: Checkpoint
    destination: Path
    files: list[str]
    size_bytes: int


#: A PEFT LoRA tensor name → the module it adapts (`base_model.model.` is PEFT's wrapper prefix).
_LORA_TENSOR = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?:lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.[^.]+)?(?:\.weight|\.bias)?$")


def adapted_modules(weights: Path) -> list[str]:
    """The modules an adapter's safetensors holds LoRA weights for, sorted."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
    modules = {match.group("module") for key in keys if (match := _LORA_TENSOR.match(key))}
    if not modules:
        raise CheckpointError(f"{weights} holds no LoRA weights")
    return sorted(modules)


def served_base_name(given_name: str, source: str, tiny_names: list[str]) -> str:
    """What `base_model_name_or_path` should say: the hub id given, a local folder's absolute path, or
    for a tiny model (built locally, no hub id) the folder it lives in."""
    if given_name in tiny_names:
        return source
    path = Path(given_name).expanduser()
    return str(path.resolve()) if path.is_dir() else given_name


def servable_adapter_config(config: dict[str, Any], modules: list[str], base_name: str) -> dict[str, Any]:
    return {**config, "target_modules": modules, "base_model_name_or_path": base_name}


def _copy_checked(checkpoint: Checkpoint, name: str, staging: Path) -> None:
    recorded = ((checkpoint.marker() or {}).get("files") or {}).get(name) or {}
    target = staging / name
    shutil.copyfile(checkpoint.path / name, target)
    if sha256_file(target) != recorded.get("sha256"):
        raise CheckpointError(f"{checkpoint.path / name} does not match its sha256 in the marker; run `vlmft ckpt verify`")


def card_facts(checkpoint: Checkpoint, base_name: str, base_source: str, backend: str) -> CardFacts:
    """Gather the model card's facts from the checkpoint, its marker and its run folder."""
    run = Run(checkpoint.run_dir)
    marker_stage = (checkpoint.marker() or {}).get("stage")
    config_path = run.path / CONFIG_FILE
    return CardFacts(
        run_name=run.name,
        step=checkpoint.step,
        stage=marker_stage if isinstance(marker_stage, int) else run.stage,
        base_model=base_name,
        base_model_source=base_source,
        backend=backend,
        eval_loss=checkpoint.eval_loss,
        adapter_config=adapter_config(checkpoint),
        run_info=run.record().to_json() if (run.path / RUN_FILE).is_file() else {},
        config_text=config_path.read_text(encoding="utf-8") if config_path.is_file() else None,
    )


def export_checkpoint(checkpoint: Checkpoint, destination: Path, *, home: Path, force: bool = False, reporter: Any = None) -> ExportResult:
    """Write `checkpoint`'s adapter, its base model's processor pieces and a model card to `destination`."""
    from vlmft_cli.runtime import quiet_libraries

    quiet_libraries()
    reporter = reporter or NullReporter()
    check_destination(destination, force=force, protect=[checkpoint.path])
    base = base_model_for(checkpoint)
    reporter.info(f"Loading the processor of {base.name} with backend {base.backend.name}")
    processor = base.backend.load_processor(base.name, home)
    source = base.backend.resolve(base.name, home)
    with staged_directory(destination, force=force, protect=[checkpoint.path]) as staging:
        for name in ADAPTER_FILES:
            _copy_checked(checkpoint, name, staging)
        modules = adapted_modules(staging / ADAPTER_WEIGHTS)
        outside = [module for module in modules if ".language_model." not in f".{module}."]
        if outside:
            reporter.warning(f"the adapter also adapts {len(outside)} modules outside the language model ({outside[0]}, …); vLLM serves LoRA on the language model only")
        config = json.loads((staging / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        served = served_base_name(base.given_name, source, base.backend.tiny_names())
        atomic_write_json(staging / ADAPTER_CONFIG, servable_adapter_config(config, modules, served))
        save_processor(processor, staging, source=source)
        facts = dataclasses.replace(card_facts(checkpoint, base.given_name, source, base.backend.name), served_base=served)
        atomic_write_text(staging / MODEL_CARD, render_model_card(facts))
        files = sorted(p.name for p in staging.iterdir())
    reporter.info(f"Exported {checkpoint.path} to {destination}")
    return ExportResult(checkpoint, destination, files, tree_size(destination))
