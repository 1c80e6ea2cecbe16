"""One training run, start to finish: `train` (a new run, or `--resume`) and `resume` (the newest good
checkpoint). This module is the Python API behind `vlmft train` and `vlmft ckpt resume`.

Features and the settings that control them:
- data: `data`/stage{N}/{train,val}.jsonl, read and validated (bad lines counted, never fatal), `subset_ratio`
- inputs: `max_frames` with `frame_sampling` (final frame always kept), `max_length` (frames never cut;
  stage-2 conversations lose whole trailing turns), labels on answers only (the backend)
- model: `model`/`backend`, `precision`, `quantization` (QLoRA), `attention` (checked on the model),
  `gradient_checkpointing`, LoRA `lora_r`/`lora_alpha`/`lora_dropout`/`lora_projections`/`lora_pattern`
- curriculum: stage 2 starts from a stage-1 adapter (`init_from`, default the newest finished stage-1
  run), with a fresh optimizer and schedule
- batch: `global_batch_size` from the stage, `micro_batch_size` from the profile, accumulation follows
- packing: stage 1 trains all QAs of a video in one sequence (`pack`, default shared-prefix where the
  backend and attention honour the block mask; see `pack_mode` and `packing`); evaluation stays per QA
- cadence: `save_steps` or `save_every_hours` (default 1 h, turned into steps), `eval_steps` (default:
  with every save), `keep_last` plus the best
- safety: `memory_cap_gb`, SIGTERM/Ctrl-C → checkpoint and clean exit, OOM → checkpoint and advice,
  checkpoints staged then renamed with a completion marker, resume restores everything and checks the loss
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmft_cli import __version__, runs
from vlmft_cli.errors import CheckpointError, ConfigError, DataError, VlmftError
from vlmft_cli.profiles import Profile, load_profile
from vlmft_cli.reporting import NullReporter, Reporter
from vlmft_cli.settings import SOURCE_STAGE, ResolvedSettings, Settings
from vlmft_cli.training import distributed
from vlmft_cli.training.distributed import world_size

DEFAULT_SAVE_EVERY_HOURS = 1.0


@dataclass
class TrainRequest:
    """What `vlmft train` asks for: resolved settings plus how this run relates to others."""

    resolved: ResolvedSettings
    init_from: str | None = None  # checkpoint/run for stage 2; "none" = the base model; None = newest stage-1 run
    resume: str | None = None  # "latest", a checkpoint or a run
    dry_run: bool = False


@dataclass
class DataSummary:
    split: str
    path: Path
    lines: int
    rejected: int
    examples: int
    qas: int
    length_report: Any
    token_lengths: list[int] = field(default_factory=list)


@dataclass
class TrainResult:
    status: str  # "finished", "interrupted", "dry-run"
    run_dir: Path | None = None
    global_step: int = 0
    last_checkpoint: Path | None = None
    train_loss: float | None = None
    eval_metrics: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    message: str = ""


# --- data --------------------------------------------------------------------------------------------


def stage_file(data_dir: Path, stage: int, split: str) -> Path:
    return data_dir / f"stage{stage}" / f"{split}.jsonl"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_split(settings: Settings, split: str, backend: Any, processor: Any, reporter: Reporter, *, required: bool) -> tuple[Any, DataSummary] | None:
    """Examples of one split with the length policy applied, and what happened on the way."""
    from vlmft_cli.data.schema import Rejection, iter_samples
    from vlmft_cli.training.examples import build_examples, subset

    assert settings.data is not None
    path = stage_file(settings.data, settings.stage, split)
    if not path.is_file():
        if required:
            raise DataError(f"{path} not found: is {settings.data} a folder written by `vlmft data extract`?")
        return None
    rejections: list[Rejection] = []
    samples = list(iter_samples(path, settings.data, rejections=rejections))
    if rejections:
        reporter.warning(f"{len(rejections)} line(s) of {path} rejected; first: {rejections[0]}")
    if split == "train":
        samples = subset(samples, settings.subset_ratio, settings.seed)
    examples, length_report = build_examples(
        samples,
        backend=backend,
        processor=processor,
        max_frames=settings.max_frames,
        frame_sampling=settings.frame_sampling,
        max_length=settings.max_length,
        clip_fps=settings.fps,
    )
    if length_report.rejected or length_report.turns_dropped:
        reporter.warning(f"{split}: {length_report.summary()}")
    summary = DataSummary(
        split=split,
        path=path,
        lines=len(samples) + len(rejections),
        rejected=len(rejections),
        examples=len(examples),
        qas=sum(e.num_qas for e in examples),
        length_report=length_report,
        token_lengths=[e.length for e in examples],
    )
    return examples, summary


# --- lineage -----------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"vlmft": __version__, "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def hardware(device: str, profile: Profile) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"profile": profile.name, "device": device, "host": platform.node(), "machine": platform.machine()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1), compute_capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count())
    return info


def settings_document(resolved_rows: list[dict[str, Any]]) -> str:
    """config.yaml: the effective settings, then where each came from."""
    settings = {row["key"]: row["value"] for row in resolved_rows}
    sources = {row["key"]: row["source"] for row in resolved_rows}
    return yaml.safe_dump({"settings": settings, "sources": sources}, sort_keys=False)


def load_run_settings(run: runs.Run) -> Settings:
    path = run.path / runs.CONFIG_FILE
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Settings(**document["settings"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read the settings of run {run.path} from {path}: {exc}") from None
    except ValueError as exc:
        raise CheckpointError(f"settings in {path} are no longer valid: {str(exc).splitlines()[0]}") from None


# --- stage 2 initialisation ----------------------------------------------------------------------------


def resolve_init_adapter(settings: Settings, init_from: str | None, reporter: Reporter) -> runs.Checkpoint | None:
    """The stage-1 checkpoint stage 2 starts from (said aloud), or None for the base model."""
    if settings.stage == 1:
        if init_from not in (None, "none"):
            reporter.warning("--init-from is for stage 2; stage 1 starts from the base model")
        return None
    if init_from == "none":
        reporter.warning("stage 2 starts from the base model (--init-from none): no curriculum")
        return None
    if init_from is not None:
        checkpoint = runs.resolve_checkpoint(settings.out, init_from, reporter=reporter)
        reporter.info(f"Stage 2 starts from {checkpoint.path}")
        return checkpoint
    finished = [r for r in runs.list_runs(settings.out, stage=1) if r.status == "finished" and r.good_checkpoints()]
    if not finished:
        raise CheckpointError(
            f"stage 2 starts from a stage-1 adapter and there is no finished stage-1 run under {settings.out}",
            hint="train stage 1 first, pass --init-from PATH, or --init-from none for stage 2 alone",
        )
    run = finished[-1]
    checkpoint = runs.best_checkpoint(run.good_checkpoints()) or run.good_checkpoints()[-1]
    reporter.info(f"Stage 2 starts from the newest finished stage-1 run: {checkpoint.path} (pass --init-from to choose another)")
    return checkpoint


# --- the plan (dry run) ------------------------------------------------------------------------------


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


def packing_data(settings: Settings, backend: Any, processor: Any, examples: list[Any]) -> Any:
    """The packing view of stage-1 training examples (`packing.PackingData`), or None where the backend
    cannot count a shared prefix or the stage does not pack."""
    from vlmft_cli.training.packing import PackingData

    if settings.stage != 1 or not callable(getattr(backend, "packed_prefix_length", None)):
        return None
    return PackingData.from_examples(examples, lambda frames: backend.packed_prefix_length(processor, frames), settings.max_length)


def run_accumulation(settings: Settings, pack: str, packing: Any, world: int = 1) -> int:
    """Micro-batches per optimizer step and device: `global_batch_size` QAs in packed sequences, or samples."""
    from vlmft_cli.training.packing import packed_accumulation

    if pack == "shared-prefix":
        if settings.global_batch_size < world:
            raise ConfigError(f"global_batch_size {settings.global_batch_size} is smaller than the {world} devices")
        return packed_accumulation(settings.global_batch_size, settings.micro_batch_size, packing.mean_qas_per_video, world)
    return settings.gradient_accumulation_steps(world)


def packing_figures(settings: Settings, packing: Any) -> dict[str, Any]:
    """Tokens of one stage-1 epoch packed (the batch plan of epoch 0) and what packing would cost."""
    from vlmft_cli.training.packing import plan_epoch, summarize

    accumulation = run_accumulation(settings, "shared-prefix", packing)
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


def make_plan(
    settings: Settings,
    profile: Profile,
    resolved: ResolvedSettings | None,
    summaries: list[DataSummary],
    model_shape: dict[str, int] | None,
    *,
    pack: str = "none",
    packing: Any = None,
) -> dict[str, Any]:
    from vlmft_cli.training.sampling import SeededOrderSampler, padding_share

    train = next(s for s in summaries if s.split == "train")
    lengths = train.token_lengths
    accumulation = run_accumulation(settings, pack, packing)
    unpacked_accumulation = settings.gradient_accumulation_steps() if pack == "none" else accumulation
    order = SeededOrderSampler(lengths, settings.seed, settings.micro_batch_size * unpacked_accumulation).order() if lengths else []
    steps_per_epoch = -(-len(lengths) // settings.global_batch_size) if lengths else 0
    figures = packing_figures(settings, packing) if packing is not None and lengths else {}
    plan: dict[str, Any] = {
        "stage": settings.stage,
        "model": settings.model,
        "profile": profile.name,
        "settings": resolved.described() if resolved else None,
        "pack": pack,
        "gradient_accumulation_steps": accumulation,
        "data": {
            s.split: {
                "path": str(s.path),
                "lines": s.lines,
                "rejected_lines": s.rejected,
                "examples": s.examples,
                "qas": s.qas,
                "rejected_too_long": s.length_report.rejected,
                "turns_dropped": s.length_report.turns_dropped,
                "tokens_per_example": {
                    "min": min(s.token_lengths, default=0),
                    "median": statistics.median(s.token_lengths) if s.token_lengths else 0,
                    "max": max(s.token_lengths, default=0),
                },
                "tokens_total": sum(s.token_lengths),
            }
            for s in summaries
        },
        "steps_per_epoch": steps_per_epoch,
        "optimizer_steps": settings.max_steps or int(steps_per_epoch * settings.num_epochs),
        "padding_share": round(padding_share(lengths, order, settings.micro_batch_size), 4) if lengths else 0.0,
        "tokens_unpacked": sum(lengths),
        "tokens_packed": figures.get("tokens_packed"),
        "packing_ratio": figures.get("packing_ratio"),
        "packing": {key: value for key, value in figures.items() if key not in ("tokens_packed", "packing_ratio")} or None,
    }
    longest = max(lengths, default=0)
    if pack == "shared-prefix" and figures:
        plan["padding_share"] = figures["padding_share_packed"]
        longest = figures["longest_packed"]
    if model_shape:
        memory = estimate_memory_gb(settings, model_shape["params"], model_shape["hidden"], model_shape["layers"], longest)
        memory["cap_gb"] = settings.memory_cap_gb or profile.hardware.memory_gb
        memory["fits"] = memory["peak_gb"] <= memory["cap_gb"]
        plan["memory_estimate"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in memory.items()}
    return plan


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


# --- running -----------------------------------------------------------------------------------------


def pick_device(profile: Profile) -> str:
    import torch

    if profile.hardware.device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"profile {profile.name} is for a CUDA GPU and none is visible here", hint="use --profile cpu on a machine without a GPU")
        return "cuda"
    return "cpu"


def compute_dtype(settings: Settings) -> Any:
    """The model's compute dtype: an additive attention mask must be in it."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[settings.precision]


def train(request: TrainRequest, reporter: Reporter | None = None) -> TrainResult:
    """Train one stage as a new run (or continue one with `request.resume`)."""
    reporter = reporter or NullReporter()
    settings, profile = request.resolved.settings, request.resolved.profile
    if request.resume is not None:
        checkpoint = runs.resolve_checkpoint(settings.out, request.resume, reporter=reporter)
        return _resume_checkpoint(checkpoint, settings.out, reporter)
    if settings.data is None:
        raise ConfigError("no data folder: pass --data DIR (what `vlmft data extract` wrote)")
    return _execute(settings, profile, request, reporter, run=None, resume_from=None)


def resume(out: Path, *, experiment: str | None = None, checkpoint: str | None = None, reporter: Reporter | None = None) -> TrainResult:
    """Continue the newest good checkpoint (of `experiment`, or a given one) exactly where it stopped."""
    reporter = reporter or NullReporter()
    if checkpoint is not None:
        found = runs.resolve_checkpoint(out, checkpoint, reporter=reporter)
    else:
        found = runs.latest_checkpoint(out, experiment=experiment, reporter=reporter)
    return _resume_checkpoint(found, out, reporter)


def _resume_checkpoint(checkpoint: runs.Checkpoint, out: Path, reporter: Reporter) -> TrainResult:
    run = runs.Run(checkpoint.run_dir)
    settings = load_run_settings(run).model_copy(update={"out": out})
    profile = load_profile(settings.profile)
    request = TrainRequest(resolved=ResolvedSettings(settings=settings, profile=profile, sources={}))
    return _execute(settings, profile, request, reporter, run=run, resume_from=checkpoint)


def training_arguments(settings: Settings, run: runs.Run, *, accumulation: int, device: str, evaluates: bool) -> Any:
    """The Trainer's arguments for a run: the recipe, the profile's hardware values and vlmft's cadence
    (a step cadence when `save_steps` is set; otherwise `SaveCadenceCallback` sets it from hours)."""
    from transformers import TrainingArguments

    save_steps = settings.save_steps
    never = 10**9  # "not by steps": the hours callback (or the end of training) triggers the save
    return TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=settings.micro_batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        max_grad_norm=settings.max_grad_norm,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,
        num_train_epochs=settings.num_epochs,
        max_steps=settings.max_steps or -1,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=save_steps or never,
        eval_strategy="steps" if evaluates else "no",
        eval_steps=settings.eval_steps or save_steps or never,
        save_total_limit=None,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=settings.precision == "bf16",
        fp16=settings.precision == "fp16",
        dataloader_num_workers=settings.dataloader_workers,
        remove_unused_columns=False,
        report_to=[] if settings.report_to == "none" else [settings.report_to],
        disable_tqdm=True,
        use_cpu=device == "cpu",
        label_names=["labels"],
        ddp_find_unused_parameters=False,
        ddp_backend="gloo" if device == "cpu" and world_size() > 1 else None,
        optim="adamw_torch",
    )


def quiet_libraries() -> None:
    """Silence library chatter that says nothing to a user (progress is ours to report)."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "Failed to load CPU gemm_4bit_forward…" on import
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _execute(settings: Settings, profile: Profile, request: TrainRequest, reporter: Reporter, *, run: runs.Run | None, resume_from: runs.Checkpoint | None) -> TrainResult:
    quiet_libraries()
    import transformers
    from transformers.trainer_callback import PrinterCallback

    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.training.callbacks import (
        MetricsCallback,
        ResumeCheckCallback,
        SaveCadenceCallback,
        StopCallback,
        StopRequest,
        file_logger,
        read_csv,
        truncate_csv_after,
    )
    from vlmft_cli.training.dataset import Collator, ExampleDataset
    from vlmft_cli.training.examples import task_type_counts
    from vlmft_cli.training.memory import MemoryCap, is_out_of_memory
    from vlmft_cli.training.model import build_model, count_parameters
    from vlmft_cli.training.pack_mode import resolve_pack
    from vlmft_cli.training.packed_dataset import PackedBatchSampler, PackedCollator, PackedDataset
    from vlmft_cli.training.sampling import SeededOrderSampler
    from vlmft_cli.training.trainer import CurriculumTrainer

    transformers.logging.set_verbosity_error()
    backend = backend_for(settings.model, settings.backend)
    attention = select_attention(settings.attention, reporter)
    processor = backend.load_processor(settings.model, settings.home)
    resolved = request.resolved
    # Only the stage default may fall back; a resumed run (no sources) must train as it started.
    explicit = resolved.sources.get("pack") != SOURCE_STAGE.format(stage=settings.stage)
    pack, dropped = resolve_pack(settings.pack, stage=settings.stage, backend=backend, attention=attention, explicit=explicit, reporter=reporter)
    if dropped:
        settings = settings.model_copy(update={"pack": pack})
        resolved = ResolvedSettings(settings, profile, {**resolved.sources, "pack": f"{resolved.sources['pack']}, dropped: {dropped}"})
    train_examples, train_summary = load_split(settings, "train", backend, processor, reporter, required=True)  # type: ignore[misc]
    if not train_examples:
        raise DataError(f"no usable training examples in {train_summary.path}")
    loaded_val = load_split(settings, "val", backend, processor, reporter, required=False)
    val_examples, val_summary = loaded_val if loaded_val else ([], None)
    summaries = [train_summary, *([val_summary] if val_summary else [])]

    packing = packing_data(settings, backend, processor, train_examples)
    if request.dry_run:
        plan = make_plan(settings, profile, resolved, summaries, model_shape(backend, settings), pack=pack, packing=packing)
        return TrainResult(status="dry-run", plan=plan, message="dry run: nothing was trained")

    device = pick_device(profile)
    distributed.init_process_group(device)
    if distributed.rank() != 0:
        reporter = NullReporter()  # one voice: rank 0 reports, logs and saves
    init = None if resume_from is not None else resolve_init_adapter(settings, request.init_from, reporter)
    accumulation = run_accumulation(settings, pack, packing, world_size())
    pack_info = {"mode": pack, "accumulation": accumulation, "dropped": dropped}
    if pack == "shared-prefix":
        pack_info["mean_qas_per_video"] = round(packing.mean_qas_per_video, 4)

    def create_run() -> Path:
        created = runs.Run(runs.new_run_dir(settings.out, settings.experiment or f"stage{settings.stage}"))
        runs.atomic_write_text(created.path / runs.CONFIG_FILE, settings_document(resolved.described()))
        created.update_info(
            name=created.name,
            stage=settings.stage,
            status="running",
            created=runs.utc_now(),
            model=settings.model,
            backend=backend.name,
            base_model=backend.resolve(settings.model, settings.home),
            attention=attention.name,
            profile=profile.name,
            parent={"run": init.run_dir.name, "run_path": str(init.run_dir), "checkpoint": str(init.path), "step": init.step} if init else None,
            pack=pack_info,
            data={
                "dir": str(settings.data),
                "files": {s.split: {"path": str(s.path), "sha256": sha256_of(s.path), "lines": s.lines} for s in summaries},
            },
            versions=versions(),
            hardware={**hardware(device, profile), "processes": world_size()},
        )
        return created.path

    if run is None:
        run = runs.Run(distributed.on_rank_zero_then_share(create_run))
    else:
        recorded = run.info().get("pack", {}).get("accumulation")
        if recorded is not None and recorded != accumulation:
            raise CheckpointError(
                f"run {run.name} took {recorded} micro-batches per step and would now take {accumulation}: "
                "its data, settings or device count changed, so its data position cannot be restored"
            )
        if distributed.rank() == 0:
            run.update_info(status="running", resumed=[*run.info().get("resumed", []), {"step": resume_from.step, "at": runs.utc_now(), "processes": world_size()}] if resume_from else run.info().get("resumed", []))

    with recording_failure(run):
        log = file_logger(run.logs_dir / "training.log", enabled=distributed.rank() == 0)
        cap = MemoryCap(settings.memory_cap_gb, profile.hardware.unified_memory)
        cap_message = cap.apply() if device == "cuda" else None
        if cap_message:
            log.info(cap_message)

        model, loaded = build_model(settings, backend, attention, device=device, init_adapter=init.path if init else None)
        trainable, total = count_parameters(model)
        log.info("model %s (%s), %d trainable of %d parameters, attention %s", settings.model, loaded.source, trainable, total, attention.attn_implementation)
        packed_note = f", packed {packing.mean_qas_per_video:.2f} QAs per video" if pack == "shared-prefix" else ""
        reporter.info(f"{run.name}: stage {settings.stage}, {len(train_examples)} training examples{packed_note}, {trainable:,} trainable parameters, accumulation {accumulation}")

        tokenizer = loaded.processor.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        collator = Collator(backend, pad_id)
        eval_dataset = ExampleDataset(val_examples, settings.data, backend, loaded.processor) if val_examples else None
        if pack == "shared-prefix":
            train_dataset: Any = PackedDataset(train_examples, settings.data, backend, loaded.processor, packing)
            sampler = None
            batch_sampler = PackedBatchSampler(packing, seed=settings.seed, global_batch_size=settings.global_batch_size, accumulation=accumulation, world_size=world_size())
            train_collator = PackedCollator(backend, pad_id, attention.attn_implementation, compute_dtype(settings))
        else:
            train_dataset = ExampleDataset(train_examples, settings.data, backend, loaded.processor)
            sampler = SeededOrderSampler(train_dataset.lengths, settings.seed, group_size=settings.micro_batch_size * accumulation)
            batch_sampler = train_collator = None

        hours = None if settings.save_steps else (settings.save_every_hours or DEFAULT_SAVE_EVERY_HOURS)
        args = training_arguments(settings, run, accumulation=accumulation, device=device, evaluates=eval_dataset is not None)
        if settings.report_to == "tensorboard":
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.logs_dir / "tensorboard")  # read by transformers' callback
        trainer = CurriculumTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=collator,
            order_sampler=sampler,
            train_batch_sampler=batch_sampler,
            train_collator=train_collator,
            eval_examples=eval_dataset,
            run=run,
            keep_last=settings.keep_last,
            reporter=reporter,
        )
        trainer.remove_callback(PrinterCallback)
        metrics = MetricsCallback(trainer, run.logs_dir, reporter, sorted(task_type_counts(val_examples)), log)
        trainer.add_callback(metrics)
        if hours is not None:
            trainer.add_callback(SaveCadenceCallback(hours, metrics, reporter, log, eval_follows=settings.eval_steps is None))
        stop = StopRequest()
        stopper = StopCallback(stop, cap, log)
        trainer.add_callback(stopper)
        if resume_from is not None:
            previous = [float(row["loss"]) for row in read_csv(run.logs_dir / "train_metrics.csv") if int(float(row["step"])) <= resume_from.step]
            if distributed.rank() == 0:
                truncate_csv_after(run.logs_dir / "train_metrics.csv", resume_from.step)
                truncate_csv_after(run.logs_dir / "eval_metrics.csv", resume_from.step)
            trainer.add_callback(ResumeCheckCallback(previous, reporter, log))
            message = f"Resumed from checkpoint: step={resume_from.step} ({resume_from.path})"
            log.info(message)
            reporter.info(message)

        stop.install()
        try:
            output = trainer.train(resume_from_checkpoint=str(resume_from.path) if resume_from else None)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            saved = _save_after_oom(trainer)
            where = f"; the last completed step was saved to {saved}" if saved else ""
            raise VlmftError(
                f"out of memory at step {trainer.state.global_step} (micro_batch_size {settings.micro_batch_size}, "
                f"max_frames {settings.max_frames}, max_length {settings.max_length}){where}",
                hint="lower --micro-batch-size (accumulation grows to keep the batch), --max-frames or --max-length, or use --quantize 4bit",
            ) from None
        finally:
            stop.uninstall()

        last = runs.Run(run.path).good_checkpoints()
        last_path = last[-1].path if last else None
        eval_metrics = trainer.last_eval[1].as_dict() if trainer.last_eval else None
        lead = distributed.rank() == 0
        if stopper.reason:
            if lead:
                run.update_info(status="interrupted", stop_reason=stopper.reason, updated=runs.utc_now())
            message = f"stopped at step {trainer.state.global_step} ({stopper.reason}); checkpoint {last_path}. Resume with: vlmft ckpt resume --latest --out {settings.out}"
            log.info(message)
            return TrainResult("interrupted", run.path, trainer.state.global_step, last_path, output.training_loss, eval_metrics, message=message)
        if lead:
            run.update_info(status="finished", finished=runs.utc_now(), updated=runs.utc_now(), global_step=trainer.state.global_step, median_step_time_s=metrics.median_step_time())
        message = f"finished stage {settings.stage} at step {trainer.state.global_step}; checkpoint {last_path}"
        log.info(message)
        return TrainResult("finished", run.path, trainer.state.global_step, last_path, output.training_loss, eval_metrics, message=message)


@contextmanager
def recording_failure(run: runs.Run) -> Iterator[None]:
    """Mark the run failed, with the error, when anything escapes (rank 0 writes)."""
    try:
        yield
    except BaseException as exc:
        if distributed.rank() == 0 and run.status == "running":
            reason = "interrupted by the user" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            run.update_info(status="failed", error=reason, updated=runs.utc_now())
        raise


def _save_after_oom(trainer: Any) -> Path | None:
    """Save the last completed optimizer step after an OOM, if memory allows; never raise."""
    import torch

    try:
        trainer.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        trainer._save_checkpoint(trainer.model, None)
        return trainer.run.checkpoints_dir / f"checkpoint-{trainer.state.global_step}"
    except Exception:
        return None
