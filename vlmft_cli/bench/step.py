"""`vlmft bench step`: one LoRA training step of the path training runs, timed and counted.

The model comes from the training code (`lora_model.build_model`: the profile's precision, attention,
gradient checkpointing, frozen base and LoRA), loaded through its backend or, with `random_init`, built
from the backend's real architecture config with random weights (`random_init`; `layers` makes both
stacks shallower for a quick run). The micro-batch is the one training would run (`micro_batch`):

- stage 1 where the model and attention backends can pack (`pipeline.packing.packing_obstacle`): packed
  sequences `[frames][QA 1][QA 2]…` from the backend's `encode_packed`, collated with the block mask by
  training's `PackedCollator`; as many QAs as a packed micro-batch of the profile holds (the global batch
  over `packed_accumulation`), RoboVQA's 3.62 QAs per video;
- otherwise (stage 2, or a stage 1 that cannot pack) the profile's `micro_batch_size` samples through
  training's `Collator` (stage 2 under flex: `PaddingFreeCollator`, one unpadded row): one QA each in
  stage 1, a whole conversation in stage 2.

Synthetic samples are RoboVQA-style QAs about noise frames (`samples`); `data` takes them from a data
folder in training's order instead. The loss is training's (`label_loss.causal_lm_loss`: logits only at
labelled positions). Each step is forward + backward (under autocast in bf16/fp16, as the Trainer runs
it), then clipping, AdamW and zeroing, timed apart with device synchronisation. The first warm-up step
counts FLOPs (`flops`): executed and necessary apart, with what the difference is made of. After `warmup`
steps, `steps` timed ones. Reported: the median time per micro-batch with the optimizer step shared over
the accumulated micro-batches, QAs/s, tokens/s, the peak memory of the timed steps, MFU from the
necessary FLOPs against the profile's datasheet peak and a matmul measured here (`matmul`), and the full
curriculum's projected time (`projection`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.bench.device import device_info, synchronizer
from vlmft_cli.bench.flops import FORMULA, BatchLayout, TrainingFlops
from vlmft_cli.bench.matmul import MatmulPeak
from vlmft_cli.bench.memory import MemoryReading
from vlmft_cli.bench.projection import Projection
from vlmft_cli.bench.results import BenchDocument, Entry, significant
from vlmft_cli.bench.timing import Stats
from vlmft_cli.errors import ConfigError, DataError
from vlmft_cli.reporting import NullReporter, Reporter
from vlmft_cli.settings import ResolvedSettings, Settings

STEP_NOTE = (
    "step_s: median forward+backward of one micro-batch plus the median optimizer step (clip, AdamW, zero) divided by "
    "the gradient-accumulation steps; optimizer_step_s = accumulation × forward+backward + optimizer; QAs/s and "
    "tokens/s (real tokens, padding excluded) from step_s; the micro-batch is collated once and reused (no data loading)"
)
MFU_NOTE = (
    "mfu = necessary FLOPs per micro-batch / step_s / peak (hfu: the same with executed FLOPs); mfu_datasheet uses the "
    "profile's peak_bf16_tflops, mfu_measured the fastest of a square matmul's repeats timed on this device in this run "
    "(bf16 on CUDA, the run's dtype on the CPU)"
)
PROJECTION_NOTE = (
    "projected hours = necessary FLOPs of the curriculum on RoboVQA (199,721 videos, 722,979 stage-1 QAs, one epoch "
    "each, 4 / 10 frames) / (peak × the MFU measured here), both stages at this stage's rate; the derivation is in "
    "details.projection and vlmft_cli/bench/projection.py"
)
#: RoboVQA-style QA turns a synthetic stage-2 conversation (and the text-length measurement) uses.
CONVERSATION_QAS = 4


@dataclass(frozen=True)
class StepOptions:
    random_init: bool = False
    variant: str | None = None  # the architecture for random_init (default: the model name)
    layers: int | None = None  # text and vision layers, for random_init
    steps: int = 5
    warmup: int = 1
    matmul_size: int | None = None  # default: 8192 on CUDA, 2048 on the CPU
    measure_matmul: bool = True  # False: no measured peak (and no mfu_measured)

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ConfigError("the step benchmark needs at least one warm-up step (it counts the FLOPs)")
        if self.steps < 1:
            raise ConfigError("--steps must be at least 1")
        if not self.random_init and (self.layers is not None or self.variant is not None):
            raise ConfigError("--layers and --variant describe a random-init model: add --random-init")


@dataclass
class MicroBatch:
    """A collated micro-batch as training runs it, and what it holds."""

    inputs: dict[str, Any]
    layout: BatchLayout
    figures: dict[str, int]
    accumulation: int
    packed: bool
    pack_reason: str | None  # why stage 1 does not pack, or None


@dataclass
class StepMeasurement:
    """What one step benchmark measured (the `Entry` of its document is built from it)."""

    label: str
    stage: int
    layers: int | None
    device: str
    accumulation: int
    packed: bool
    batch: dict[str, int]
    forward_backward: Stats  # seconds
    optimizer: Stats  # seconds
    flops: TrainingFlops
    memory: MemoryReading
    matmul: MatmulPeak | None
    datasheet_tflops: float | None
    checkpointing: bool
    projection: Projection | None = None
    parameters: dict[str, int] = field(default_factory=dict)

    @property
    def step_s(self) -> float:
        return self.forward_backward.median + self.optimizer.median / self.accumulation

    @property
    def qas_per_s(self) -> float:
        return self.batch["qas"] / self.step_s

    @property
    def samples_per_s(self) -> float:
        """Training examples per second, as a dataloader yields them: QAs when packed (a stage-1 example is
        one QA), samples otherwise."""
        return (self.batch["qas"] if self.packed else self.batch["samples"]) / self.step_s

    @property
    def tokens_per_s(self) -> float:
        return self.batch["tokens"] / self.step_s

    @property
    def necessary_tflops(self) -> float:
        return self.flops.necessary.total / self.step_s / 1e12

    @property
    def executed_tflops(self) -> float:
        return self.flops.executed.total / self.step_s / 1e12

    @staticmethod
    def _share(tflops: float, peak_tflops: float | None) -> float | None:
        return None if not peak_tflops else significant(tflops / peak_tflops)

    def entry(self) -> Entry:
        measured = self.matmul.tflops if self.matmul else None
        projection = self.projection
        metrics: dict[str, float | None] = {
            "step_s": round(self.step_s, 5),
            "forward_backward_s_median": round(self.forward_backward.median, 5),
            "forward_backward_s_min": round(self.forward_backward.min, 5),
            "forward_backward_s_max": round(self.forward_backward.max, 5),
            "forward_backward_s_iqr": round(self.forward_backward.iqr, 5),
            "optimizer_s_median": round(self.optimizer.median, 5),
            "optimizer_step_s": round(self.accumulation * self.forward_backward.median + self.optimizer.median, 5),
            "qas_per_s": round(self.qas_per_s, 4),
            "samples_per_s": round(self.samples_per_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "peak_memory_mib": None if self.memory.peak_mib is None else round(self.memory.peak_mib, 1),
            "executed_tflop_per_micro_batch": significant(self.flops.executed.total / 1e12),
            "necessary_tflop_per_micro_batch": significant(self.flops.necessary.total / 1e12),
            "executed_over_necessary": significant(self.flops.ratio),
            "necessary_tflops": significant(self.necessary_tflops),
            "executed_tflops": significant(self.executed_tflops),
            "mfu_datasheet": self._share(self.necessary_tflops, self.datasheet_tflops),
            "mfu_measured": self._share(self.necessary_tflops, measured),
            "hfu_measured": self._share(self.executed_tflops, measured),
            "measured_matmul_tflops": None if self.matmul is None else significant(self.matmul.tflops),
            "projected_stage1_h": None if projection is None else significant(projection.stage_hours[0]),
            "projected_stage2_h": None if projection is None else significant(projection.stage_hours[1]),
            "projected_curriculum_h": None if projection is None else significant(projection.curriculum_hours),
        }
        details = {
            "batch": self.batch,
            "accumulation": self.accumulation,
            "packed": self.packed,
            "gradient_checkpointing": self.checkpointing,
            "parameters": self.parameters,
            "flops": self.flops.as_dict(),
            "forward_backward_s": self.forward_backward.as_dict(5),
            "optimizer_s": self.optimizer.as_dict(5),
            "memory": self.memory.as_dict(),
            "matmul": None if self.matmul is None else self.matmul.as_dict(),
            "datasheet_bf16_tflops": self.datasheet_tflops,
            "projection": None if projection is None else projection.as_dict(),
        }
        return Entry(key={"model": self.label, "stage": self.stage, "layers": self.layers}, metrics=metrics, details=details)


def _build(settings: Settings, options: StepOptions, device: str, reporter: Reporter) -> tuple[Any, Any, Any, Any, str]:
    """(LoRA model on the device, its processor, the model backend, the attention backend, a label)."""
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.bench.architecture import with_layers
    from vlmft_cli.bench.random_init import RandomInitBackend, architecture_processor
    from vlmft_cli.lora_model import build_model

    backend = backend_for(settings.model, settings.backend)
    attention = select_attention(settings.attention, reporter, backend)  # as training's `plan_run` selects it
    loader: Any = backend
    label = settings.model
    if options.random_init:
        wanted = options.variant or settings.model
        variant = next((v for v in backend.architecture_variants() if v.lower() == wanted.lower()), None)
        if variant is None:
            raise ConfigError(f"model backend {backend.name} has no architecture {wanted!r} (known: {', '.join(backend.architecture_variants())})", hint="pass --variant")
        config, processor = architecture_processor(backend, with_layers(backend.architecture_config(variant), options.layers), settings.home)
        label = f"{variant} (random init{f', {options.layers} layers' if options.layers else ''})"
        loader = RandomInitBackend(backend, config, processor, device, seed=settings.seed, label=label)
        reporter.info(f"building {label} on {device}")
    model, loaded = build_model(settings, loader, attention, device=device)
    if settings.quantization == "none":
        model.to(device)
    return model, loaded.processor, backend, attention, label


def _autocast(device: str, precision: str) -> Any:
    import torch

    from vlmft_cli.runtime import dtype_for

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype_for(precision))


def _synthetic_turns(count: int) -> list[Any]:
    from vlmft_cli.bench.samples import QAS
    from vlmft_cli.model_backend import Turn

    turns: list[Any] = []
    for index in range(count):
        question, answer = QAS[index % len(QAS)]
        turns += [Turn("user", question), Turn("assistant", answer)]
    return turns


def _split_qas(qas: int, sequences: int) -> list[int]:
    """`qas` QAs over `sequences` videos as evenly as possible, larger first: 8 over 3 → [3, 3, 2]."""
    base, extra = divmod(qas, sequences)
    return [base + (1 if index < extra else 0) for index in range(sequences)]


def _figures(samples: list[Any], batch: dict[str, Any], layout: BatchLayout, qas: int, frames: int) -> dict[str, int]:
    return {
        "samples": len(samples),
        "qas": qas,
        "frames": frames,
        "tokens": layout.real_tokens,
        "padded_tokens": int(batch["input_ids"].numel()),
        "label_tokens": layout.labelled_positions,
        "image_tokens": sum(sample.num_image_tokens for sample in samples),
        "longest": max(len(sample) for sample in samples),
        "attention_pairs": layout.attention_pairs,
    }


def _packed_samples(settings: Settings, backend: Any, processor: Any, accumulation_qas: int, reporter: Reporter) -> tuple[list[Any], int, int]:
    """(packed samples of one micro-batch, QAs, frames): synthetic, or the first micro-batch of the data's
    epoch-0 plan."""
    from vlmft_cli.bench.projection import ROBOVQA
    from vlmft_cli.bench.samples import synthetic_frames

    if settings.data is None:
        sequences = max(1, round(accumulation_qas / ROBOVQA.qas_per_video))
        frames = synthetic_frames(settings.max_frames)
        samples = [backend.encode_packed(processor, frames, _synthetic_turns(count)) for count in _split_qas(accumulation_qas, sequences)]
        return samples, accumulation_qas, sequences * settings.max_frames
    from vlmft_cli.pipeline.packed_dataset import PackedDataset
    from vlmft_cli.pipeline.packing import PackingData, packed_accumulation, plan_epoch
    from vlmft_cli.pipeline.splits import load_split

    examples, summary = load_split(settings, "train", backend, processor, reporter, required=True)  # type: ignore[misc]
    packing = PackingData.for_backend(examples, backend, processor, settings.max_length)
    accumulation = packed_accumulation(settings.global_batch_size, settings.micro_batch_size, packing.mean_qas_per_video)
    plan = plan_epoch(packing, seed=settings.seed, epoch=0, global_batch_size=settings.global_batch_size, per_step=accumulation)
    if not plan or not plan[0]:
        raise DataError(f"{summary.path} has no training example to pack")
    dataset = PackedDataset(examples, settings.data, backend, processor, packing)
    micro = plan[0][0]
    return [dataset[sequence] for sequence in micro], sum(len(s) for s in micro), sum(len(examples[s[0]].images) for s in micro)


def micro_batch(settings: Settings, backend: Any, processor: Any, attention: Any, reporter: Reporter) -> MicroBatch:
    """The micro-batch training would run for `settings` (see the module docstring), collated on the CPU."""
    from vlmft_cli.bench.flops import batch_layout
    from vlmft_cli.bench.projection import ROBOVQA
    from vlmft_cli.bench.samples import data_samples, synthetic_frames
    from vlmft_cli.model_backend import pad_token_id
    from vlmft_cli.pipeline.dataset import Collator
    from vlmft_cli.pipeline.packed_dataset import STAT_KEYS, PackedCollator
    from vlmft_cli.pipeline.packing import packed_accumulation, packing_obstacle
    from vlmft_cli.pipeline.padding_free import PaddingFreeCollator, padding_free
    from vlmft_cli.runtime import dtype_for

    pad = pad_token_id(processor.tokenizer)
    obstacle = packing_obstacle(settings.stage, backend, attention) if settings.pack != "none" else "--pack none"
    packed = obstacle is None
    if packed:
        accumulation = packed_accumulation(settings.global_batch_size, settings.micro_batch_size, ROBOVQA.qas_per_video)
        qas_wanted = max(1, round(settings.global_batch_size / accumulation))
        samples, qas, frames = _packed_samples(settings, backend, processor, qas_wanted, reporter)
        collated = PackedCollator(backend, pad, attention.attn_implementation, dtype_for(settings.precision))(samples)
        inputs = {key: value for key, value in collated.items() if key not in STAT_KEYS}
        layout = batch_layout(inputs, [(s.packed.prefix_length, s.packed.block_lengths) for s in samples])
        if settings.data is not None:
            accumulation = max(1, round(settings.global_batch_size / qas))
    else:
        count = settings.micro_batch_size
        if settings.data is not None:
            samples = data_samples(settings, backend, processor, count, reporter)
        else:
            turns = _synthetic_turns(1 if settings.stage == 1 else CONVERSATION_QAS)
            samples = [backend.encode(processor, synthetic_frames(settings.max_frames), turns)] * count
        if padding_free(settings.stage, count, backend, attention):  # stage 2 under flex: one unpadded row, as training
            collated = PaddingFreeCollator(backend, pad, attention.attn_implementation, dtype_for(settings.precision))(samples)
            inputs = {key: value for key, value in collated.items() if key not in STAT_KEYS}
            layout = batch_layout(inputs, [(len(sample), ()) for sample in samples])
        else:
            inputs = Collator(backend, pad)(samples)
            layout = batch_layout(inputs)
        qas = sum(len(sample.answer_spans) for sample in samples)
        frames = settings.max_frames * count
        accumulation = settings.gradient_accumulation_steps()
    reason = None if settings.stage != 1 else obstacle
    return MicroBatch(inputs, layout, _figures(samples, inputs, layout, qas, frames), accumulation, packed, reason)


def text_lengths(settings: Settings, backend: Any, processor: Any, labelled_per_qa: float) -> Any:
    """The model's token lengths for the projection: `conversation_lengths` of the synthetic
    RoboVQA-style conversation with each stage's frames (`projection.TextLengths`)."""
    from vlmft_cli.bench.projection import ROBOVQA, TextLengths

    turns = _synthetic_turns(CONVERSATION_QAS)
    after = {frames: list(backend.conversation_lengths(processor, frames, turns)) for frames in ROBOVQA.frames}
    return TextLengths.from_lengths(after, ROBOVQA.frames, labelled_per_qa, backend.tokens_per_frame(processor))


@dataclass
class _Timed:
    label: str
    batch: MicroBatch
    timings: dict[str, list[float]]
    flops: TrainingFlops
    memory: MemoryReading
    parameters: dict[str, int]
    checkpointing: bool
    lengths: Any


def _train_timed(settings: Settings, options: StepOptions, device: str, reporter: Reporter) -> _Timed:
    """Build the model and the micro-batch, count FLOPs in the first warm-up step, time the rest."""
    import torch

    from vlmft_cli.attention_masks import with_block_mask
    from vlmft_cli.bench.flops import TrainingFlopCounter
    from vlmft_cli.bench.memory import PeakMemory
    from vlmft_cli.label_loss import causal_lm_loss
    from vlmft_cli.lora_model import count_parameters

    model, processor, backend, attention, label = _build(settings, options, device, reporter)
    micro = micro_batch(settings, backend, processor, attention, reporter)
    if micro.pack_reason and settings.pack != "none":
        reporter.warning(f"stage 1 runs one QA per sample: {micro.pack_reason}")
    # As the trainer's `_prepare_inputs`: on the device, then flex's document ids become its BlockMask.
    batch = with_block_mask({key: value.to(device) if torch.is_tensor(value) else value for key, value in micro.inputs.items()})
    # The Trainer divides a step's summed loss by its label tokens over every accumulated micro-batch.
    num_items = torch.tensor(micro.layout.labelled_positions * micro.accumulation, device=device)
    lengths = text_lengths(settings, backend, processor, micro.layout.labelled_positions / micro.figures["qas"])

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, betas=(settings.adam_beta1, settings.adam_beta2), weight_decay=settings.weight_decay)
    sync = synchronizer(device)
    model.train()

    def forward_backward(counter: TrainingFlopCounter | None = None) -> None:
        with counter.forward() if counter else contextlib.nullcontext(), _autocast(device, settings.precision):
            loss = causal_lm_loss(model, dict(batch), num_items)
        with counter.backward() if counter else contextlib.nullcontext():
            loss.backward()

    def optimizer_step() -> None:
        torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = TrainingFlopCounter(model, micro.layout)
    forward_backward(counter)
    flops = counter.finish()
    optimizer_step()
    for _ in range(options.warmup - 1):
        forward_backward()
        optimizer_step()
    timings: dict[str, list[float]] = {"forward_backward": [], "optimizer": []}
    with reporter.progress("bench step", total=options.steps, unit="steps") as task, PeakMemory(device) as peak:
        for _ in range(options.steps):
            for name, call in (("forward_backward", forward_backward), ("optimizer", optimizer_step)):
                sync()
                start = time.perf_counter()
                call()
                sync()
                timings[name].append(time.perf_counter() - start)
            task.advance(step_s=timings["forward_backward"][-1])
    trained, total = count_parameters(model)
    checkpointing = bool(getattr(model.get_base_model(), "is_gradient_checkpointing", False))
    return _Timed(label, micro, timings, flops, peak.reading, {"trainable": trained, "total": total}, checkpointing, lengths)


def run_step(resolved: ResolvedSettings, options: StepOptions, reporter: Reporter | None = None) -> StepMeasurement:
    """Build, warm up and time the training step, then measure the matmul peak; see the module docstring."""
    import torch
    import transformers

    from vlmft_cli.bench.matmul import measure_matmul_peak
    from vlmft_cli.bench.projection import ModelRates, project
    from vlmft_cli.runtime import pick_device, quiet_libraries

    reporter = reporter or NullReporter()
    quiet_libraries()
    transformers.logging.set_verbosity_error()
    settings, profile = resolved.settings, resolved.profile
    device = pick_device(profile)
    timed = _train_timed(settings, options, device, reporter)
    gc.collect()  # the model and optimizer went out of scope: free them before the matmul
    if device == "cuda":
        torch.cuda.empty_cache()
    matmul = None
    if options.measure_matmul:
        matmul = measure_matmul_peak(device, "bf16" if device == "cuda" else settings.precision, options.matmul_size)
    micro = timed.batch
    measurement = StepMeasurement(
        label=timed.label,
        stage=settings.stage,
        layers=options.layers,
        device=device,
        accumulation=micro.accumulation,
        packed=micro.packed,
        batch=micro.figures,
        forward_backward=Stats.of(timed.timings["forward_backward"]),
        optimizer=Stats.of(timed.timings["optimizer"]),
        flops=timed.flops,
        memory=timed.memory,
        matmul=matmul,
        datasheet_tflops=profile.hardware.peak_bf16_tflops,
        checkpointing=timed.checkpointing,
        parameters=timed.parameters,
    )
    layout = micro.layout
    rates = ModelRates.measure(timed.flops.necessary, frames=micro.figures["frames"], tokens=layout.real_tokens, pairs=layout.attention_pairs, labelled=layout.labelled_positions)
    stage1_packed = micro.packed if settings.stage == 1 else _stage1_packs(settings)
    rate = timed.flops.necessary.total / measurement.step_s
    if math.isfinite(rate) and rate > 0:
        measurement.projection = project(rates, timed.lengths, rate, stage1_packed=stage1_packed)
    return measurement


def _stage1_packs(settings: Settings) -> bool:
    """Whether stage 1 would pack by default with these backends (for a stage-2 measurement's projection)."""
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.pipeline.packing import packing_obstacle

    backend = backend_for(settings.model, settings.backend)
    return packing_obstacle(1, backend, select_attention(settings.attention, model_backend=backend)) is None


def step_document(resolved: ResolvedSettings, options: StepOptions, measurement: StepMeasurement) -> BenchDocument:
    settings = resolved.settings
    parameters = {
        "model": settings.model,
        "variant": options.variant,
        "random_init": options.random_init,
        "layers": options.layers,
        "stage": settings.stage,
        "profile": resolved.profile.name,
        "data": None if settings.data is None else str(Path(settings.data)),
        "steps": options.steps,
        "warmup": options.warmup,
        "device": measurement.device,
        "precision": settings.precision,
        "attention": settings.attention,
        "gradient_checkpointing": str(settings.gradient_checkpointing),
        "gradient_checkpointing_on": measurement.checkpointing,
        "micro_batch_size": settings.micro_batch_size,
        "global_batch_size": settings.global_batch_size,
        "max_frames": settings.max_frames,
        "pack": "shared-prefix (block mask)" if measurement.packed else "none (one sample per sequence)",
        "lora": {"r": settings.lora_r, "alpha": settings.lora_alpha, "dropout": settings.lora_dropout, "projections": settings.lora_projections, "pattern": settings.lora_pattern},
    }
    notes = {
        "step": STEP_NOTE,
        "flops": FORMULA,
        "mfu": MFU_NOTE,
        "projection": PROJECTION_NOTE,
        "memory": "peak_memory_mib: CUDA max allocated (weights included) or the process's peak resident set, during the timed steps",
    }
    return BenchDocument(bench="step", device=device_info(measurement.device), parameters=parameters, entries=[measurement.entry()], notes=notes)


def measure_step(resolved: ResolvedSettings, options: StepOptions, reporter: Reporter | None = None) -> BenchDocument:
    """`vlmft bench step` as a Python call: the measurement as a benchmark document."""
    return step_document(resolved, options, run_step(resolved, options, reporter))
