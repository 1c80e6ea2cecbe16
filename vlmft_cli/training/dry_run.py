"""What `vlmft train --dry-run` shows: the settings with their sources, exact tokens per sample from the
real data, the padding share, the step count, what packing saves and a memory estimate against the cap."""

from __future__ import annotations

import statistics
from typing import Any

from vlmft_cli.settings import Settings
from vlmft_cli.training.plan import Plan, accumulation_for


def estimate_memory_gb(settings: Settings, total_params: int, hidden: int, layers: int, longest: int) -> dict[str, float]:
    """A rough peak: weights + LoRA optimizer state + activations of one micro-batch."""
    bytes_per_weight = {"4bit": 0.55, "8bit": 1.05}.get(settings.quantization, 4.0 if settings.precision == "fp32" else 2.0)
    weights = total_params * bytes_per_weight
    lora = 2 * settings.lora_r * hidden * 7 * layers  # A and B for seven projections (square approximation)
    optimizer = lora * (4 + 4 + 8)  # fp32 weights, grads, two Adam moments
    act_bytes = 2 if settings.precision != "fp32" else 4
    per_layer = (2 if settings.gradient_checkpointing else 34) * hidden * act_bytes
    activations = settings.micro_batch_size * longest * per_layer * layers
    total = (weights + optimizer + activations) * 1.15  # allocator and workspace slack
    return {"weights_gb": weights / 1e9, "optimizer_gb": optimizer / 1e9, "activations_gb": activations / 1e9, "peak_gb": total / 1e9}


def packing_figures(settings: Settings, packing: Any) -> dict[str, Any]:
    """Tokens of one stage-1 epoch packed (the batch plan of epoch 0) and what packing would cost."""
    from vlmft_cli.pipeline.packing import plan_epoch, summarize

    accumulation = accumulation_for(settings, "shared-prefix", packing)
    steps = plan_epoch(packing, seed=settings.seed, epoch=0, global_batch_size=settings.global_batch_size, per_step=accumulation)
    summary = summarize(packing, steps)
    return {
        "tokens_packed": summary.tokens_packed,
        "packing_ratio": round(summary.ratio, 4),
        "packed_accumulation": accumulation,
        "mean_qas_per_video": round(packing.mean_qas_per_video, 3),
        "packed_sequences": summary.sequences,
        "padding_share_packed": round(summary.padding_share, 4),
        "longest_packed": max(packing.sequence_length(sequence) for step in steps for batch in step for sequence in batch),
    }


def model_shape(backend: Any, settings: Settings) -> dict[str, int] | None:
    """Parameter count and text dimensions from the model's config alone (meta device, no weights)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        source = backend.resolve(settings.model, settings.home)
        config = AutoConfig.from_pretrained(source)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        text = getattr(config, "text_config", config)
        return {"params": sum(p.numel() for p in model.parameters()), "hidden": text.hidden_size, "layers": text.num_hidden_layers}
    except Exception:  # a hub name not in the local cache: no estimate rather than a download
        return None


def split_figures(summary: Any) -> dict[str, Any]:
    lengths = summary.token_lengths
    return {
        "path": str(summary.path),
        "lines": summary.lines,
        "rejected_lines": summary.rejected,
        "examples": summary.examples,
        "qas": summary.qas,
        "rejected_too_long": summary.length_report.rejected,
        "turns_dropped": summary.length_report.turns_dropped,
        "tokens_per_example": {"min": min(lengths, default=0), "median": statistics.median(lengths) if lengths else 0, "max": max(lengths, default=0)},
        "tokens_total": sum(lengths),
    }


def describe(plan: Plan, reconcile_lines: list[str] | None = None) -> dict[str, Any]:
    """The dry run's document (also `--json`)."""
    from vlmft_cli.pipeline.sampling import SeededOrderSampler, padding_share

    settings = plan.settings
    lengths = [example.length for example in plan.train_examples]
    order = SeededOrderSampler(lengths, settings.seed, settings.global_batch_size).order()
    figures = packing_figures(settings, plan.packing) if plan.packing is not None else {}
    packed = plan.packed and bool(figures)
    document: dict[str, Any] = {
        "stage": settings.stage,
        "model": settings.model,
        "profile": plan.profile.name,
        "settings": plan.resolved.described(),
        "pack": plan.pack,
        "gradient_accumulation_steps": plan.accumulation,
        "data": {summary.split: split_figures(summary) for summary in plan.summaries},
        "steps_per_epoch": plan.steps_per_epoch,
        "optimizer_steps": plan.optimizer_steps,
        "padding_share": figures["padding_share_packed"] if packed else round(padding_share(lengths, order, settings.micro_batch_size), 4),
        "tokens_unpacked": sum(lengths),
        "tokens_packed": figures.get("tokens_packed"),
        "packing_ratio": figures.get("packing_ratio"),
        "packing": {key: value for key, value in figures.items() if key not in ("tokens_packed", "packing_ratio")} or None,
        "resume": reconcile_lines,
    }
    shape = model_shape(plan.backend, settings)
    if shape:
        longest = figures["longest_packed"] if packed else max(lengths)
        memory: dict[str, Any] = estimate_memory_gb(settings, shape["params"], shape["hidden"], shape["layers"], longest)
        memory["cap_gb"] = settings.memory_cap_gb or plan.profile.hardware.memory_gb
        memory["fits"] = memory["peak_gb"] <= memory["cap_gb"]
        document["memory_estimate"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in memory.items()}
    return document
