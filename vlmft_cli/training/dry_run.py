"""What `vlmft train --dry-run` shows: the settings with their sources, exact tokens per sample from the
real data, the padding share, the step count, what packing saves and a memory estimate against the cap."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from vlmft_cli.settings import Settings
from vlmft_cli.training.plan import Plan, accumulation_for

GB = 1e9
#: CUDA's caching allocator and kernel workspaces on top of what tensors hold (fragmentation, cuBLAS).
ALLOCATOR_SLACK = 1.10


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs of a model, read from its real config on the meta device (no weights):
    parameter counts, the language model's dimensions, every LoRA target's (in, out) features and the vision
    tower's width."""

    params: int
    quantizable: int  # weights of the language model's linear layers (what bitsandbytes quantizes; not lm_head)
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    lora_features: tuple[tuple[int, int], ...]  # (in, out) of every LoRA target module, all layers
    vision_hidden: int = 0
    vision_intermediate: int = 0
    vision_patches: int = 0  # patch tokens of one frame (one tile) in the vision tower

    def as_dict(self) -> dict[str, int]:
        return {
            "params": self.params,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "layers": self.layers,
            "vocab": self.vocab,
            "lora_targets": len(self.lora_features),
        }


@dataclass(frozen=True)
class MicroBatchLoad:
    """The largest micro-batch of the plan: rows × padded row length, labelled positions, frames."""

    rows: int
    row_tokens: int
    labelled: int  # label tokens of the whole micro-batch
    frames: int
    masked: bool  # a 4-D mask (packed or padded rows): SDPA repeats K/V for GQA and keeps the copies

    @property
    def tokens(self) -> int:
        return self.rows * self.row_tokens


def bytes_per_activation(settings: Settings) -> int:
    return 4 if settings.precision == "fp32" else 2


def layer_activation_bytes(
    shape: ModelShape, *, value_bytes: int, lora_r: int, lora_dropout: float, kv_repeated: bool, device: str = "cuda"
) -> float:
    """Bytes autograd keeps per token for one Qwen2-style decoder layer with a frozen base and LoRA, for
    its backward (no checkpointing). With h hidden, i intermediate, n heads, k KV heads of d dims, b bytes
    per activation value, r the LoRA rank, and for each LoRA target its input width `in`:

    - each RMSNorm upcasts its input to fp32 and keeps that copy (pow and mul save it): 2 × 4h; the
      weight is frozen, so the normalised output is not kept;
    - a frozen base linear keeps nothing (no weight gradient; its input gradient needs only the weight);
      its LoRA keeps the dropout mask (1 byte on CUDA, a b-byte float mask on the CPU) and the dropped-out
      input (b) for A's weight gradient, and A's output (r × b) for B's: Σ over targets of in × (1 + b) +
      r × b (without dropout, in × b);
    - rotary embedding multiplies by cos/sin, which are kept once for all layers; SDPA keeps q, k, v, its
      output and the log-sum-exp (n × 4): (2h + 2kd) × b + 4n, where k and v are n-head copies (2h × b)
      when transformers repeats them for GQA, as it does whenever a 4-D mask is passed;
    - the MLP keeps the gate output for SiLU, SiLU's output and the up output for their product: 3i × b
      (the product itself only reaches down_proj's LoRA, counted above).

    For InternVL3-8B's Qwen2.5-7B (h 3584, i 18944, n 28, k 4, d 128) in bf16 with r 128, dropout 0.05
    and the seven projections adapted: 28,672 + 121,344 + 1,792 + 28,784 (K/V repeated) + 113,664 ≈
    294 kB per token per layer, ~8.2 MB per token for the 28 layers.
    """
    b = value_bytes
    mask = 1 if device == "cuda" else b
    per_layer_targets = shape.lora_features[: len(shape.lora_features) // max(1, shape.layers)] if shape.layers else ()
    lora = sum(inputs * ((mask + b) if lora_dropout > 0 else b) + lora_r * b for inputs, _ in per_layer_targets)
    kv = shape.heads * shape.head_dim if kv_repeated else shape.kv_heads * shape.head_dim
    attention = (2 * shape.heads * shape.head_dim + 2 * kv) * b + 4 * shape.heads
    return 2 * 4 * shape.hidden + lora + attention + 3 * shape.intermediate * b


def activation_bytes(
    shape: ModelShape, load: MicroBatchLoad, settings: Settings, checkpointing: bool, device: str = "cuda"
) -> dict[str, float]:
    """Peak activation bytes of one micro-batch's forward and backward, by part.

    - decoder layers: without checkpointing every layer keeps `layer_activation_bytes` per token; with it
      (one checkpoint per layer) each keeps its input (h × b) and one layer's worth is recomputed at a time
      in the backward;
    - around them: the embeddings and the merged image features (2h × b), the final norm's fp32 copy
      (4h) and the gradients flowing between layers (2h × b), per token;
    - the head at labelled positions only, the union of the rows' positions in every row (`label_loss`):
      logits (b), their fp32 copy and log-softmax (4 + 4), and the backward's fp32 gradient (4) per
      position and vocabulary entry;
    - the frozen vision tower runs forward only, before the language model: one layer's working set at a
      time (its input, attention q/k/v/output and the MLP's intermediate: (5 × width + intermediate) × b
      per patch) for every frame. It is gone before the language model's activations pile up, so the
      peak is the larger of the two (`peak_activation_bytes`).
    """
    b = bytes_per_activation(settings)
    per_layer = layer_activation_bytes(
        shape,
        value_bytes=b,
        lora_r=settings.lora_r,
        lora_dropout=settings.lora_dropout,
        kv_repeated=load.masked,
        device=device,
    )
    tokens = load.tokens
    layers = (
        (shape.layers * shape.hidden * b + per_layer) * tokens if checkpointing else shape.layers * per_layer * tokens
    )
    around = (4 * shape.hidden * b + 4 * shape.hidden) * tokens
    logits = load.rows * min(load.labelled, load.row_tokens) * shape.vocab * (b + 12 if b != 4 else 12)
    vision = load.frames * shape.vision_patches * (5 * shape.vision_hidden + shape.vision_intermediate) * b
    return {"layers": layers, "around_layers": around, "logits": logits, "vision": vision}


def peak_activation_bytes(parts: dict[str, float]) -> float:
    """The activations' peak from `activation_bytes`: the vision forward, or the language model's."""
    return max(parts["vision"], parts["layers"] + parts["around_layers"] + parts["logits"])


def estimate_memory_gb(
    settings: Settings, shape: ModelShape, load: MicroBatchLoad, *, checkpointing: bool, device: str = "cuda"
) -> dict[str, float]:
    """Peak memory of training one micro-batch: weights, LoRA state and activations (see above), plus the
    allocator's slack.

    Weights: 4 / 2 bytes per parameter in fp32 / bf16 and fp16; quantized, the language model's linear
    weights take 4.13 bits (NF4 with double-quantised scales) or 8 bits plus a scale per row, and the rest
    (vision tower, embeddings, head, norms) is upcast to fp32 by PEFT's k-bit preparation. LoRA: A (r × in)
    and B (out × r) of every real target module, in fp32 (PEFT upcasts adapters), with their gradients and
    AdamW's two moments: 16 bytes per LoRA parameter.
    """
    half = 4 if settings.precision == "fp32" else 2
    if settings.quantization == "4bit":
        weights = shape.quantizable * 4.127 / 8 + (shape.params - shape.quantizable) * 4
    elif settings.quantization == "8bit":
        weights = shape.quantizable * 1.0 + shape.hidden * shape.layers * 7 * 4 + (shape.params - shape.quantizable) * 4
    else:
        weights = shape.params * half
    lora_params = sum(settings.lora_r * (inputs + outputs) for inputs, outputs in shape.lora_features)
    lora = lora_params * (4 + 4 + 8)
    parts = activation_bytes(shape, load, settings, checkpointing, device)
    activations = peak_activation_bytes(parts)
    peak = (weights + lora + activations) * ALLOCATOR_SLACK
    return {
        "weights_gb": weights / GB,
        "optimizer_gb": lora / GB,
        "activations_gb": activations / GB,
        **{f"{name}_gb": value / GB for name, value in parts.items()},
        "peak_gb": peak / GB,
    }


@dataclass(frozen=True)
class CheckpointingChoice:
    """Gradient checkpointing as the run uses it: `value` on/off, from `asked` (auto, on, off), and why."""

    asked: str
    value: str
    reason: str
    peak_off_gb: float | None = None
    peak_on_gb: float | None = None
    cap_gb: float | None = None
    #: What the peaks were estimated from, kept for the dry run's memory figures (not part of `as_dict`).
    estimate: tuple[ModelShape, MicroBatchLoad] | None = field(default=None, repr=False, compare=False)

    @property
    def enabled(self) -> bool:
        return self.value == "on"

    def line(self) -> str:
        return f"gradient checkpointing: {self.value} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in self.__dict__.items()
            if key != "estimate"
        }


def _gb(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def decide_checkpointing(
    asked: str, cap_gb: float, peak_off_gb: float | None, peak_on_gb: float | None = None, source: str = ""
) -> CheckpointingChoice:
    """The auto rule: on exactly when the estimated peak without checkpointing exceeds the cap; without an
    estimate, on (the safe side). `on`/`off` are kept as given."""
    if asked != "auto":
        return CheckpointingChoice(asked, asked, f"set by {source or 'the settings'}", peak_off_gb, peak_on_gb, cap_gb)
    if peak_off_gb is None:
        return CheckpointingChoice(
            asked,
            "on",
            "auto: no memory estimate (the model's config is not available here), on to be safe",
            None,
            None,
            cap_gb,
        )
    if peak_off_gb > cap_gb:
        with_it = f"; {_gb(peak_on_gb)} GB with it" if peak_on_gb is not None else ""
        return CheckpointingChoice(
            asked,
            "on",
            f"auto: estimated peak {_gb(peak_off_gb)} GB without it > cap {cap_gb:g} GB{with_it}",
            peak_off_gb,
            peak_on_gb,
            cap_gb,
        )
    return CheckpointingChoice(
        asked, "off", f"auto: estimated peak {_gb(peak_off_gb)} GB ≤ cap {cap_gb:g} GB", peak_off_gb, peak_on_gb, cap_gb
    )


def memory_cap_gb(plan: Plan) -> float:
    return plan.settings.memory_cap_gb or plan.profile.hardware.memory_gb


def largest_micro_batch(plan: Plan) -> MicroBatchLoad:
    """The plan's micro-batch with the most padded tokens (stage-1 packed: from epoch 0's batch plan; else
    `micro_batch_size` rows of the longest example), its labelled positions counted from the answers."""
    settings = plan.resolved.settings
    examples = plan.train_examples
    tokenizer = getattr(plan.processor, "tokenizer", None)

    def answer_tokens(example: Any) -> int:
        answers = [turn.text for turn in example.turns if turn.role == "assistant"]
        if tokenizer is None:
            return sum(len(answer) for answer in answers)  # characters: an upper bound on tokens
        return sum(
            len(tokenizer(answer, add_special_tokens=False).input_ids) + 1 for answer in answers
        )  # + end of turn

    if plan.packed and plan.packing is not None:
        from vlmft_cli.pipeline.packing import plan_epoch

        data = plan.packing
        steps = plan_epoch(
            data,
            seed=settings.seed,
            epoch=0,
            global_batch_size=settings.global_batch_size,
            per_step=plan.accumulation * plan.world,
            world_size=plan.world,
        )
        batch = max(
            (batch for step in steps for batch in step), key=lambda b: len(b) * max(data.sequence_length(s) for s in b)
        )
        row = max(data.sequence_length(sequence) for sequence in batch)
        labelled = sum(answer_tokens(examples[qa]) for sequence in batch for qa in sequence)
        frames = sum(len(examples[sequence[0]].images) for sequence in batch)
        return MicroBatchLoad(len(batch), row, labelled, frames, masked=True)
    rows = min(settings.micro_batch_size, len(examples))
    ranked = sorted(range(len(examples)), key=lambda i: -examples[i].length)[:rows]
    labelled = sum(answer_tokens(examples[i]) for i in ranked)
    frames = sum(len(examples[i].images) for i in ranked)
    return MicroBatchLoad(rows, examples[ranked[0]].length, labelled, frames, masked=rows > 1)


def resolve_checkpointing(
    plan: Plan, shape: ModelShape | None = None, load: MicroBatchLoad | None = None
) -> CheckpointingChoice:
    """`gradient_checkpointing` made concrete for this plan: `auto` compares the estimated peak of the
    largest micro-batch (`load`, found here when not given) without checkpointing with the memory cap
    (`decide_checkpointing`). The choice keeps the shape and load it was estimated from."""
    settings = plan.resolved.settings
    asked = str(settings.gradient_checkpointing)
    source = plan.resolved.sources.get("gradient_checkpointing", "default")
    cap = memory_cap_gb(plan)
    shape = shape if shape is not None else (model_shape(plan.backend, settings) if asked == "auto" else None)
    if shape is None:
        return decide_checkpointing(asked, cap, None, source=source)
    load = load if load is not None else largest_micro_batch(plan)
    device = plan.profile.hardware.device
    off = estimate_memory_gb(settings, shape, load, checkpointing=False, device=device)["peak_gb"]
    on = estimate_memory_gb(settings, shape, load, checkpointing=True, device=device)["peak_gb"]
    return replace(decide_checkpointing(asked, cap, off, on, source=source), estimate=(shape, load))


def packing_figures(settings: Settings, packing: Any) -> dict[str, Any]:
    """Tokens of one stage-1 epoch packed (the batch plan of epoch 0) and what packing would cost."""
    from vlmft_cli.pipeline.packing import plan_epoch, summarize

    accumulation = accumulation_for(settings, "shared-prefix", packing)
    steps = plan_epoch(
        packing, seed=settings.seed, epoch=0, global_batch_size=settings.global_batch_size, per_step=accumulation
    )
    summary = summarize(packing, steps)
    return {
        "tokens_packed": summary.tokens_packed,
        "packing_ratio": round(summary.ratio, 4),
        "packed_accumulation": accumulation,
        "mean_qas_per_video": round(packing.mean_qas_per_video, 3),
        "packed_sequences": summary.sequences,
        "padding_share_packed": round(summary.padding_share, 4),
        "longest_packed": max(
            packing.sequence_length(sequence) for step in steps for batch in step for sequence in batch
        ),
    }


def shape_of(model: Any, config: Any, lora_target: str) -> ModelShape:
    """`ModelShape` of a model (on the meta device is enough) and its config; `lora_target` is the regex
    PEFT matches module names against."""
    import re

    from torch import nn

    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    features, quantizable = [], 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if "language_model" in name and module is not head:
            quantizable += module.weight.numel()
        if re.fullmatch(lora_target, name):
            features.append((module.in_features, module.out_features))
    heads = text.num_attention_heads
    patches = 0
    if vision is not None:
        image, patch = getattr(vision, "image_size", 0), getattr(vision, "patch_size", 1)
        image = image[0] if isinstance(image, (list, tuple)) else image
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        patches = (image // patch) ** 2 if image else 0
    return ModelShape(
        params=sum(p.numel() for p in model.parameters()),
        quantizable=quantizable,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        lora_features=tuple(features),
        vision_hidden=getattr(vision, "hidden_size", 0) if vision is not None else 0,
        vision_intermediate=getattr(vision, "intermediate_size", 0) if vision is not None else 0,
        vision_patches=patches,
    )


def model_shape(backend: Any, settings: Settings) -> ModelShape | None:
    """The model's `ModelShape` from its config alone (meta device, no weights), or None where the config
    is not available here (a hub name not in the local cache: no estimate rather than a download)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        from vlmft_cli.lora_model import lora_pattern

        source = backend.resolve(settings.model, settings.home)
        config = AutoConfig.from_pretrained(source)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        return shape_of(model, config, lora_pattern(settings, backend))
    except Exception:
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
        "tokens_per_example": {
            "min": min(lengths, default=0),
            "median": statistics.median(lengths) if lengths else 0,
            "max": max(lengths, default=0),
        },
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
        "padding_share": figures["padding_share_packed"]
        if packed
        else round(padding_share(lengths, order, settings.micro_batch_size), 4),
        "tokens_unpacked": sum(lengths),
        "tokens_packed": figures.get("tokens_packed"),
        "packing_ratio": figures.get("packing_ratio"),
        "packing": {key: value for key, value in figures.items() if key not in ("tokens_packed", "packing_ratio")}
        or None,
        "resume": reconcile_lines,
    }
    # `plan_run` has estimated the peaks already when it resolved `auto`: its model shape (a model built
    # on the meta device) and largest micro-batch (an epoch's batch plan) are not worked out again.
    estimate = plan.checkpointing.estimate if plan.checkpointing is not None else None
    if estimate is None:
        shape = model_shape(plan.backend, settings)
        estimate = (shape, largest_micro_batch(plan)) if shape else None
    choice = plan.checkpointing or resolve_checkpointing(plan, *(estimate or ()))
    document["gradient_checkpointing"] = choice.as_dict()
    if estimate:
        shape, load = estimate
        memory: dict[str, Any] = estimate_memory_gb(
            settings, shape, load, checkpointing=choice.enabled, device=plan.profile.hardware.device
        )
        memory["cap_gb"] = memory_cap_gb(plan)
        memory["fits"] = memory["peak_gb"] <= memory["cap_gb"]
        memory["micro_batch"] = {
            "rows": load.rows,
            "row_tokens": load.row_tokens,
            "labelled": load.labelled,
            "frames": load.frames,
        }
        memory["model"] = shape.as_dict()
        document["memory_estimate"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in memory.items()}
    return document
