"""Exporting a checkpoint's adapter for sharing: adapter files, processor pieces and a model card.

The export loads with `PeftModel.from_pretrained(base, folder)`. It holds `adapter_model.safetensors` and
`adapter_config.json` (byte copies, checked against the checkpoint's marker), the base model's
tokenizer and image processor, and README.md; never optimizer, scheduler or RNG state. It is written
beside the destination and renamed into place only when complete.
"""

from __future__ import annotations

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
from vlmft_cli.fsutil import atomic_write_text, sha256_file
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
    reporter = reporter or NullReporter()
    check_destination(destination, force=force, protect=[checkpoint.path])
    base = base_model_for(checkpoint)
    reporter.info(f"Loading the processor of {base.name} with backend {base.backend.name}")
    processor = base.backend.load_processor(base.name, home)
    source = base.backend.resolve(base.name, home)
    with staged_directory(destination, force=force, protect=[checkpoint.path]) as staging:
        for name in ADAPTER_FILES:
            _copy_checked(checkpoint, name, staging)
        save_processor(processor, staging)
        facts = card_facts(checkpoint, base.given_name, source, base.backend.name)
        atomic_write_text(staging / MODEL_CARD, render_model_card(facts))
        files = sorted(p.name for p in staging.iterdir())
    reporter.info(f"Exported {checkpoint.path} to {destination}")
    return ExportResult(checkpoint, destination, files, tree_size(destination))
