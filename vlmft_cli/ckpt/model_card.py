"""The README.md model card written with an exported adapter.

Hugging Face front matter (base model, `library_name: peft`), a summary table (base model, backend,
stage, step, eval loss, LoRA shape), the run's lineage from run.json, its effective settings from
config.yaml verbatim, how to load the adapter with `PeftModel.from_pretrained`, and how to serve it with
vLLM beside its base model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states; gathered by the exporter from the checkpoint and its run."""

    run_name: str
    step: int
    stage: int | None
    base_model: str
    base_model_source: str
    backend: str
    eval_loss: float | None
    adapter_config: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    served_base: str | None = None  # what vLLM serves the base as (the adapter's base_model_name_or_path)


def _fenced(text: str, language: str = "") -> str:
    """A code block whose fence is longer than any run of backticks inside `text`."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


#: The `--max-lora-rank` values vLLM accepts (its LoRAConfig).
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: Any) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds `rank`."""
    rank = rank if isinstance(rank, int) else 0
    return next((allowed for allowed in VLLM_MAX_LORA_RANKS if allowed >= rank), VLLM_MAX_LORA_RANKS[-1])


def render_model_card(facts: CardFacts) -> str:
    """The README.md text for an exported adapter."""
    lora = facts.adapter_config
    targets = lora.get("target_modules")
    rows = [
        ("Base model", f"`{facts.base_model}`"),
        ("Loaded from", f"`{facts.base_model_source}`"),
        ("Backend", facts.backend),
        ("Curriculum stage", facts.stage if facts.stage is not None else "unknown"),
        ("Step", facts.step),
        ("Eval loss", f"{facts.eval_loss:.4f}" if facts.eval_loss is not None else "not recorded"),
        ("LoRA", f"r={lora.get('r')}, alpha={lora.get('lora_alpha')}, dropout={lora.get('lora_dropout')}"),
        ("LoRA targets", f"`{targets}`" if targets else "unknown"),
        ("Run", facts.run_name),
    ]
    table = "\n".join(["| | |", "|---|---|", *(f"| {key} | {_cell(value)} |" for key, value in rows)])
    front_matter = "\n".join(
        [
            "---",
            f"base_model: {json.dumps(facts.base_model)}",
            "library_name: peft",
            "pipeline_tag: image-text-to-text",
            "tags: [vlmft, lora, robovqa]",
            "---",
        ]
    )
    loading = _fenced(
        "\n".join(
            [
                "from peft import PeftModel",
                "from transformers import AutoModelForImageTextToText, AutoTokenizer",
                "",
                f"base = AutoModelForImageTextToText.from_pretrained({json.dumps(facts.base_model_source)})",
                'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
                "model = model.merge_and_unload()  # optional: fold the adapter into the weights",
            ]
        ),
        "python",
    )
    adapter_name = re.sub(r"[^A-Za-z0-9._-]+", "-", facts.run_name) or "vlmft"
    serving = _fenced(
        f"vllm serve {facts.served_base or facts.base_model} --enable-lora --lora-modules {adapter_name}=path/to/this/folder \\\n"
        f"    --max-lora-rank {vllm_max_lora_rank(lora.get('r'))} --max-model-len 8192 --limit-mm-per-prompt '{{\"image\": 16}}'",
        "bash",
    )
    settings = _fenced(facts.config_text, "yaml") if facts.config_text else "config.yaml was not found in the run folder."
    lineage = _fenced(json.dumps(facts.run_info, indent=2, sort_keys=True, default=str), "json") if facts.run_info else "run.json was not found."
    return "\n\n".join(
        [
            front_matter,
            f"# LoRA adapter for {facts.base_model}: {facts.run_name}, step {facts.step}",
            "Fine-tuned with vlmft on RoboVQA robot-video question answering. This folder holds the adapter "
            "(`adapter_model.safetensors`, `adapter_config.json`) and the base model's tokenizer and image "
            "processor; no optimizer state.",
            table,
            "## How to load",
            loading,
            "`vlmft ckpt merge` writes the merged model as a plain transformers folder.",
            "## Serving with vLLM",
            f"Requests name the adapter as their model (`\"model\": \"{adapter_name}\"`); the system prompt the run trained "
            "with (`system_prompt` below) must be sent as the system message. Not tested by vlmft (no vLLM where it was built).",
            serving,
            "## Lineage (run.json)",
            lineage,
            "## Settings (config.yaml)",
            settings,
        ]
    ) + "\n"
