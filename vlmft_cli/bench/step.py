"""`vlmft bench step`: one LoRA training step of a stage's realistic micro-batch, timed and counted.

The model comes from the training code (`lora_model.build_model`: the profile's precision, attention,
gradient checkpointing, frozen base and LoRA), loaded through its backend or, with `random_init`, built
from the backend's real architecture config with random weights (`random_init`; `layers` makes both
stacks shallower for a quick run). The micro-batch has the profile's `micro_batch_size` samples of the
stage (`samples`), is collated once and stays on the device: data loading is `vlmft bench data`'s job.

Each step is forward + backward of the micro-batch (under autocast in bf16/fp16, as the Trainer runs it),
then gradient clipping, AdamW and zeroing, timed apart with device synchronisation. After `warmup` steps
(the first also counts model FLOPs, see `flops`), `steps` timed ones. Reported: the median time per
micro-batch with the optimizer step shared over the accumulated micro-batches, samples/s, tokens/s, the
peak memory of the timed steps, and model-FLOPs utilization against the profile's datasheet bf16 peak and
against a matmul peak measured on the device in the same run (`matmul`).
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.bench.device import device_info, synchronizer
from vlmft_cli.bench.flops import FORMULA, FlopCount
from vlmft_cli.bench.matmul import MatmulPeak
from vlmft_cli.bench.memory import MemoryReading
from vlmft_cli.bench.results import BenchDocument, Entry, significant
from vlmft_cli.bench.timing import Stats
from vlmft_cli.errors import ConfigError
from vlmft_cli.model_backend import pad_token_id
from vlmft_cli.reporting import NullReporter, Reporter
from vlmft_cli.settings import ResolvedSettings, Settings

STEP_NOTE = (
    "step_s: median forward+backward of one micro-batch plus the median optimizer step (clip, AdamW, zero) divided by "
    "the gradient-accumulation steps; optimizer_step_s = accumulation × forward+backward + optimizer; samples/s and "
    "tokens/s (real tokens, padding excluded) from step_s; the micro-batch is collated once and reused (no data loading)"
)
MFU_NOTE = (
    "mfu = model FLOPs per micro-batch / step_s / peak; mfu_datasheet uses the profile's peak_bf16_tflops, "
    "mfu_measured the fastest of a square matmul's repeats timed on this device in this run (bf16 on CUDA, the run's dtype on the CPU)"
)


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
class StepMeasurement:
    """What one step benchmark measured (the `Entry` of its document is built from it)."""

    label: str
    stage: int
    layers: int | None
    device: str
    accumulation: int
    batch: dict[str, int]
    forward_backward: Stats  # seconds
    optimizer: Stats  # seconds
    flops: FlopCount
    memory: MemoryReading
    matmul: MatmulPeak | None
    datasheet_tflops: float | None
    parameters: dict[str, int] = field(default_factory=dict)

    @property
    def step_s(self) -> float:
        return self.forward_backward.median + self.optimizer.median / self.accumulation

    @property
    def samples_per_s(self) -> float:
        return self.batch["samples"] / self.step_s

    @property
    def tokens_per_s(self) -> float:
        return self.batch["tokens"] / self.step_s

    @property
    def achieved_tflops(self) -> float:
        return self.flops.total / self.step_s / 1e12

    def _mfu(self, peak_tflops: float | None) -> float | None:
        return None if not peak_tflops else significant(self.achieved_tflops / peak_tflops)

    def entry(self) -> Entry:
        metrics: dict[str, float | None] = {
            "step_s": round(self.step_s, 5),
            "forward_backward_s_median": round(self.forward_backward.median, 5),
            "forward_backward_s_min": round(self.forward_backward.min, 5),
            "forward_backward_s_max": round(self.forward_backward.max, 5),
            "forward_backward_s_iqr": round(self.forward_backward.iqr, 5),
            "optimizer_s_median": round(self.optimizer.median, 5),
            "optimizer_step_s": round(self.accumulation * self.forward_backward.median + self.optimizer.median, 5),
            "samples_per_s": round(self.samples_per_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "peak_memory_mib": None if self.memory.peak_mib is None else round(self.memory.peak_mib, 1),
            "model_tflop_per_micro_batch": significant(self.flops.total / 1e12),
            "achieved_tflops": significant(self.achieved_tflops),
            "mfu_datasheet": self._mfu(self.datasheet_tflops),
            "mfu_measured": self._mfu(self.matmul.tflops if self.matmul else None),
            "measured_matmul_tflops": None if self.matmul is None else significant(self.matmul.tflops),
        }
        details = {
            "batch": self.batch,
            "accumulation": self.accumulation,
            "parameters": self.parameters,
            "flops": self.flops.as_dict(),
            "forward_backward_s": self.forward_backward.as_dict(5),
            "optimizer_s": self.optimizer.as_dict(5),
            "memory": self.memory.as_dict(),
            "matmul": None if self.matmul is None else self.matmul.as_dict(),
            "datasheet_bf16_tflops": self.datasheet_tflops,
        }
        return Entry(key={"model": self.label, "stage": self.stage, "layers": self.layers}, metrics=metrics, details=details)


def _build(settings: Settings, options: StepOptions, device: str, reporter: Reporter) -> tuple[Any, Any, Any, str]:
    """(LoRA model on the device, its processor, the model backend, a label for the model)."""
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.bench.architecture import with_layers
    from vlmft_cli.bench.random_init import RandomInitBackend, architecture_processor
    from vlmft_cli.lora_model import build_model

    backend = backend_for(settings.model, settings.backend)
    attention = select_attention(settings.attention, reporter)
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
    return model, loaded.processor, backend, label


def _autocast(device: str, precision: str) -> Any:
    import torch

    from vlmft_cli.runtime import dtype_for

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype_for(precision))


@dataclass
class _Timed:
    label: str
    batch: dict[str, int]
    timings: dict[str, list[float]]
    flops: FlopCount
    memory: MemoryReading
    parameters: dict[str, int]


def _train_timed(settings: Settings, options: StepOptions, device: str, reporter: Reporter) -> _Timed:
    """Build the model and the micro-batch, count FLOPs in the first warm-up step, time the rest."""
    import torch

    from vlmft_cli.bench.flops import TrainingFlopCounter
    from vlmft_cli.bench.memory import PeakMemory
    from vlmft_cli.bench.samples import batch_figures, data_samples, synthetic_samples
    from vlmft_cli.lora_model import count_parameters

    model, processor, backend, label = _build(settings, options, device, reporter)
    count = settings.micro_batch_size
    if settings.data is not None:
        samples = data_samples(settings, backend, processor, count, reporter)
    else:
        samples = synthetic_samples(backend, processor, settings.stage, settings.max_frames, count)
    collated = backend.collate(samples, pad_token_id(processor.tokenizer))
    figures = batch_figures(samples, collated)
    batch = {key: value.to(device) for key, value in collated.items()}

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, betas=(settings.adam_beta1, settings.adam_beta2), weight_decay=settings.weight_decay)
    sync = synchronizer(device)
    model.train()

    def forward_backward(counter: TrainingFlopCounter | None = None) -> None:
        with counter or contextlib.nullcontext(), _autocast(device, settings.precision):
            loss = model(**batch).loss
        loss.backward()  # outside the counter: recomputation under gradient checkpointing is not counted

    def optimizer_step() -> None:
        torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = TrainingFlopCounter(model)
    forward_backward(counter)
    counter.remove()
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
    return _Timed(label, figures, timings, counter.count, peak.reading, {"trainable": trained, "total": total})


def run_step(resolved: ResolvedSettings, options: StepOptions, reporter: Reporter | None = None) -> StepMeasurement:
    """Build, warm up and time the training step, then measure the matmul peak; see the module docstring."""
    import torch
    import transformers

    from vlmft_cli.bench.matmul import measure_matmul_peak
    from vlmft_cli.runtime import pick_device, quiet_libraries

    reporter = reporter or NullReporter()
    quiet_libraries()
    transformers.logging.set_verbosity_error()
    settings, profile = resolved.settings, resolved.profile
    device = pick_device(profile)
    accumulation = settings.gradient_accumulation_steps()
    timed = _train_timed(settings, options, device, reporter)
    gc.collect()  # the model and optimizer went out of scope: free them before the matmul
    if device == "cuda":
        torch.cuda.empty_cache()
    matmul = None
    if options.measure_matmul:
        matmul = measure_matmul_peak(device, "bf16" if device == "cuda" else settings.precision, options.matmul_size)
    return StepMeasurement(
        label=timed.label,
        stage=settings.stage,
        layers=options.layers,
        device=device,
        accumulation=accumulation,
        batch=timed.batch,
        forward_backward=Stats.of(timed.timings["forward_backward"]),
        optimizer=Stats.of(timed.timings["optimizer"]),
        flops=timed.flops,
        memory=timed.memory,
        matmul=matmul,
        datasheet_tflops=profile.hardware.peak_bf16_tflops,
        parameters=timed.parameters,
    )


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
        "gradient_checkpointing": settings.gradient_checkpointing,
        "micro_batch_size": settings.micro_batch_size,
        "max_frames": settings.max_frames,
        "pack": "none (one sample per sequence)",
        "lora": {"r": settings.lora_r, "alpha": settings.lora_alpha, "dropout": settings.lora_dropout, "projections": settings.lora_projections, "pattern": settings.lora_pattern},
    }
    notes = {"step": STEP_NOTE, "flops": FORMULA, "mfu": MFU_NOTE, "memory": "peak_memory_mib: CUDA max allocated (weights included) or the process's peak resident set, during the timed steps"}
    return BenchDocument(bench="step", device=device_info(measurement.device), parameters=parameters, entries=[measurement.entry()], notes=notes)


def measure_step(resolved: ResolvedSettings, options: StepOptions, reporter: Reporter | None = None) -> BenchDocument:
    """`vlmft bench step` as a Python call: the measurement as a benchmark document."""
    return step_document(resolved, options, run_step(resolved, options, reporter))
