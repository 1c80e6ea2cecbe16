"""`vlmft bench data`: can the dataloader feed training? Samples/s against what a step consumes.

The loader is training's own: the stage's examples after the length policy (`pipeline.splits.load_split`),
`ExampleDataset` (frames read and encoded per item), training's `Collator`, the length-grouped
`SeededOrderSampler`, the profile's micro-batch and dataloader workers (or `workers`). After the first
batch (which includes starting the workers, reported as `startup_s`), `batches` micro-batches are timed;
epochs repeat when the data runs out. Stage 1 is measured one QA per sample (`pack none`).

What a step consumes is `step_samples_per_s`, or measured with `vlmft bench step`'s code on the same
settings and data. Issue 4's targets: the loader at least 4× the step, and under 10% padding per batch
with length-grouped batches (also shown for plain shuffling). On a CPU the loader's workers and the
training compete for the same cores, which the two separate measurements do not show.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from vlmft_cli.bench.device import device_info, resolve_device
from vlmft_cli.bench.results import BenchDocument, Entry
from vlmft_cli.errors import DataError
from vlmft_cli.model_backend import pad_token_id
from vlmft_cli.reporting import NullReporter, Reporter
from vlmft_cli.settings import ResolvedSettings, Settings

RATIO_TARGET = 4.0
PADDING_TARGET = 0.10


@dataclass(frozen=True)
class DataOptions:
    workers: int | None = None  # None: the profile's dataloader_workers
    batches: int = 20
    step_samples_per_s: float | None = None  # None: measured
    step_steps: int = 3

    def __post_init__(self) -> None:
        if self.batches < 1:
            raise DataError("--batches must be at least 1")
        if self.step_samples_per_s is not None and self.step_samples_per_s <= 0:
            raise DataError("--step-samples-per-s must be positive")


@dataclass(frozen=True)
class LoaderFigures:
    startup_s: float  # until the first micro-batch (workers started)
    batches: int
    samples: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


def time_loader(loader: Any, batches: int) -> LoaderFigures:
    """Time `batches` micro-batches of `loader` after its first, cycling epochs as needed."""
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    startup = time.perf_counter() - start
    samples = 0
    start = time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        samples += int(batch["input_ids"].shape[0])
    return LoaderFigures(startup, batches, samples, time.perf_counter() - start)


def _loader(settings: Settings, workers: int, reporter: Reporter) -> tuple[Any, list[int], int]:
    """(training's DataLoader for the stage, the examples' token lengths, the length-grouping size)."""
    import torch

    from vlmft_cli.backends import backend_for
    from vlmft_cli.chat_pieces import apply_system_prompt
    from vlmft_cli.pipeline.dataset import Collator, ExampleDataset
    from vlmft_cli.pipeline.sampling import SeededOrderSampler
    from vlmft_cli.pipeline.splits import load_split

    backend = backend_for(settings.model, settings.backend)
    processor = apply_system_prompt(backend, backend.load_processor(settings.model, settings.home), settings.system_prompt)
    examples, _ = load_split(settings, "train", backend, processor, reporter, required=True)  # type: ignore[misc]
    assert settings.data is not None
    dataset = ExampleDataset(examples, settings.data, backend, processor)
    group = settings.micro_batch_size * settings.gradient_accumulation_steps()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.micro_batch_size,
        sampler=SeededOrderSampler(dataset.lengths, settings.seed, group_size=group),
        num_workers=workers,
        collate_fn=Collator(backend, pad_token_id(processor.tokenizer)),
        persistent_workers=workers > 0,
    )
    return loader, dataset.lengths, group


def padding_shares(lengths: list[int], seed: int, group: int, micro_batch_size: int) -> dict[str, float]:
    """Padding share of one epoch's micro-batches, length-grouped (training's order) and plainly shuffled."""
    from vlmft_cli.pipeline.sampling import SeededOrderSampler, padding_share

    grouped = SeededOrderSampler(lengths, seed, group_size=group).order()
    shuffled = SeededOrderSampler(lengths, seed).order()
    return {
        "padding_share_grouped": round(padding_share(lengths, grouped, micro_batch_size), 4),
        "padding_share_shuffled": round(padding_share(lengths, shuffled, micro_batch_size), 4),
    }


def measure_data(resolved: ResolvedSettings, options: DataOptions, reporter: Reporter | None = None) -> BenchDocument:
    """The dataloader benchmark as a document; see the module docstring."""
    from vlmft_cli.bench.step import StepOptions, run_step
    from vlmft_cli.runtime import quiet_libraries

    reporter = reporter or NullReporter()
    quiet_libraries()
    settings = resolved.settings
    if settings.data is None:
        raise DataError("no data folder: pass --data DIR (what `vlmft data extract` wrote)")
    workers = settings.dataloader_workers if options.workers is None else options.workers
    loader, lengths, group = _loader(settings, workers, reporter)
    reporter.info(f"timing {options.batches} micro-batches of {settings.micro_batch_size} from {len(lengths)} examples with {workers} worker(s)")
    figures = time_loader(loader, options.batches)
    del loader  # stops persistent workers before the step is measured
    if options.step_samples_per_s is not None:
        step_rate, step_source, device = options.step_samples_per_s, "given (--step-samples-per-s)", resolve_device("auto")
    else:
        reporter.info("measuring what a training step consumes (bench step on the same settings and data)")
        step = run_step(resolved, StepOptions(steps=options.step_steps, measure_matmul=False), reporter)
        step_rate, step_source, device = step.samples_per_s, f"measured: {step.label}, {step.batch['samples']} samples per micro-batch, step {step.step_s:.4g} s", step.device
    ratio = figures.samples_per_s / step_rate
    padding = padding_shares(lengths, settings.seed, group, settings.micro_batch_size)
    metrics: dict[str, float | None] = {
        "loader_samples_per_s": round(figures.samples_per_s, 3),
        "step_samples_per_s": round(step_rate, 4),
        "ratio": round(ratio, 3),
        "startup_s": round(figures.startup_s, 3),
        **padding,
    }
    details = {
        "loader": asdict(figures),
        "examples": len(lengths),
        "length_group_size": group,
        "step": step_source,
        "targets": {"ratio": RATIO_TARGET, "padding_share_grouped": PADDING_TARGET},
        "meets": {"ratio": ratio >= RATIO_TARGET, "padding_share_grouped": padding["padding_share_grouped"] < PADDING_TARGET},
    }
    parameters = {
        "data": str(settings.data),
        "stage": settings.stage,
        "profile": resolved.profile.name,
        "model": settings.model,
        "workers": workers,
        "micro_batch_size": settings.micro_batch_size,
        "batches": options.batches,
        "max_frames": settings.max_frames,
        "pack": "none (one sample per sequence)",
    }
    entry = Entry(key={"stage": settings.stage, "micro_batch_size": settings.micro_batch_size}, metrics=metrics, details={"workers": workers, **details})
    notes = {
        "ratio": f"loader samples/s ÷ step samples/s; target ≥ {RATIO_TARGET:g} (issue 4)",
        "padding": f"share of padding tokens in one epoch's micro-batches; target < {PADDING_TARGET:.0%} with length grouping",
        "cpu": "on a CPU the workers and the step share cores; the two rates are measured apart",
    }
    return BenchDocument(bench="data", device=device_info(device), parameters=parameters, entries=[entry], notes=notes)
