"""Merging a checkpoint's LoRA adapter into its base model, saved as a plain transformers model.

The base model is loaded unquantized through its backend at the requested precision, the adapter is
applied with `PeftModel.from_pretrained` and folded in with `merge_and_unload()`. The output folder holds
safetensors weights, config, tokenizer with its chat template, image processor and the composite
processor's config (`processor_files`: what `AutoModelForImageTextToText`, `AutoTokenizer`,
`AutoImageProcessor` with the PIL processors, the backend's `load_processor` and vLLM read), and
`vlmft_merge.json` recording where it came from (`vlmft chat --checkpoint FOLDER` takes the run's settings
from it). It is written beside the destination and renamed into place only when complete. Library chatter
(bitsandbytes' missing `kernels`, transformers' shard-writing bar) is silenced: progress is the reporter's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli.ckpt.base_model import base_model_for
from vlmft_cli.ckpt.listing import tree_size
from vlmft_cli.ckpt.processor_files import save_processor
from vlmft_cli.ckpt.staging import check_destination, staged_directory
from vlmft_cli.errors import CheckpointError
from vlmft_cli.fsutil import atomic_write_json
from vlmft_cli.model_backend import LoadOptions, Precision
from vlmft_cli.reporting import NullReporter
from vlmft_cli.runs import Checkpoint, utc_now

MERGE_INFO = "vlmft_merge.json"


@dataclass(frozen=True)
class MergeResult:
    """Where the merged model went and what it was made of."""

    checkpoint: Checkpoint
    destination: Path
    base_model: str
    backend: str
    precision: str
    size_bytes: int


def merge_checkpoint(
    checkpoint: Checkpoint,
    destination: Path,
    *,
    home: Path,
    precision: Precision = "bf16",
    force: bool = False,
    trust_remote_code: bool = False,
    reporter: Any = None,
) -> MergeResult:
    """Merge `checkpoint`'s adapter into its base model and save the result to `destination`."""
    from vlmft_cli.runtime import quiet_libraries

    quiet_libraries()  # before peft imports bitsandbytes
    from peft import PeftModel

    from vlmft_cli.model_loading import no_progress_bars

    reporter = reporter or NullReporter()
    check_destination(destination, force=force, protect=[checkpoint.path])  # before the slow part
    base = base_model_for(checkpoint)
    reporter.info(f"Loading base model {base.name} with backend {base.backend.name} ({precision})")
    options = LoadOptions(precision=precision, quantization="none", trust_remote_code=trust_remote_code)
    loaded = base.backend.load(base.name, options, home)
    reporter.info(f"Applying and merging the adapter of {checkpoint.path}")
    merged = PeftModel.from_pretrained(loaded.model, str(checkpoint.path)).merge_and_unload()
    with staged_directory(destination, force=force, protect=[checkpoint.path]) as staging:
        reporter.info(f"Saving the merged model to {destination}")
        with no_progress_bars():
            merged.save_pretrained(str(staging), safe_serialization=True)
        save_processor(loaded.processor, staging, source=loaded.source, model_type=getattr(merged.config, "model_type", None))
        atomic_write_json(
            staging / MERGE_INFO,
            {
                "checkpoint": str(checkpoint.path.resolve()),
                "step": checkpoint.step,
                "run": checkpoint.run_dir.name,
                "base_model": base.given_name,
                "base_model_source": loaded.source,
                "backend": base.backend.name,
                "precision": precision,
                "created": utc_now(),
            },
        )
        try:
            base.backend.load_processor(str(staging), home)
        except Exception as exc:  # whatever the backend raises, the output would be unusable
            raise CheckpointError(f"the merged model's processor does not load back ({exc}); nothing was written") from exc
    return MergeResult(checkpoint, destination, base.given_name, base.backend.name, precision, tree_size(destination))
