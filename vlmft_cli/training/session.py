"""The setup phase of a run: the model with its adapter, the datasets of the shared pipeline, the Trainer
and its callbacks (metrics, save cadence, stop and memory guard, and after a resume the loss check)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from vlmft_cli import runs
from vlmft_cli.reporting import Reporter
from vlmft_cli.training.plan import Plan

DEFAULT_SAVE_EVERY_HOURS = 1.0


@dataclass
class Session:
    """A run ready to train: its Trainer and the callbacks the finish phase reads."""

    run: runs.Run
    trainer: Any  # trainer.CurriculumTrainer
    metrics: Any  # callbacks.MetricsCallback
    stop: Any  # callbacks.StopRequest
    stopper: Any  # callbacks.StopCallback
    log: logging.Logger
    faults: Any = None  # callbacks.FaultCallback: non-finite steps, unreadable samples


@dataclass(frozen=True)
class Datasets:
    train: Any
    eval: Any
    collator: Any  # training's when unpacked
    order_sampler: Any  # unpacked training order
    batch_sampler: Any  # packed training plan
    train_collator: Any  # packed training
    eval_data: Any = None  # evaluate.loss.EvalData: what evaluation reads (packed as training is)
    eval_subset: list[int] | None = None  # the checkpoint subset (`eval_limit`), None for the whole split


def build_datasets(plan: Plan, processor: Any) -> Datasets:
    """The training and evaluation datasets of the shared pipeline, with the order or plan and collators."""
    from vlmft_cli.evaluate.loss import EvalData, PackSpec
    from vlmft_cli.evaluate.subset import stratified_subset
    from vlmft_cli.model_backend import pad_token_id
    from vlmft_cli.pipeline.dataset import Collator, ExampleDataset
    from vlmft_cli.pipeline.packed_dataset import PackedBatchSampler, PackedCollator, PackedDataset
    from vlmft_cli.pipeline.padding_free import PaddingFreeCollator, padding_free
    from vlmft_cli.pipeline.sampling import SeededOrderSampler
    from vlmft_cli.runtime import dtype_for

    settings, data = plan.settings, plan.settings.data
    pad_id = pad_token_id(processor.tokenizer)
    collator = Collator(plan.backend, pad_id)
    eval_dataset = ExampleDataset(plan.val_examples, data, plan.backend, processor) if plan.val_examples else None
    # Evaluation packs as training does (frames once per video), with the same workers.
    eval_pack = PackSpec(plan.attention.attn_implementation, dtype_for(settings.precision), settings.max_length) if plan.packed else None
    evaluation = {
        "eval_data": EvalData(list(plan.val_examples), data, plan.backend, processor, pad_id, eval_pack, skip_bad=True, source=f"stage{settings.stage}/val.jsonl") if plan.val_examples else None,
        "eval_subset": stratified_subset(plan.val_examples, settings.eval_limit, settings.seed),
    }
    # Training skips (and the trainer counts) samples whose frames do not decode.
    source = f"stage{settings.stage}/train.jsonl"  # as `pipeline.splits.stage_file` names it, relative to the data folder
    if plan.packed:
        train = PackedDataset(plan.train_examples, data, plan.backend, processor, plan.packing, skip_bad=True, source=source)
        batch_sampler = PackedBatchSampler(plan.packing, seed=settings.seed, global_batch_size=settings.global_batch_size, accumulation=plan.accumulation, world_size=plan.world)
        packed_collator = PackedCollator(plan.backend, pad_id, plan.attention.attn_implementation, dtype_for(settings.precision))
        return Datasets(train, eval_dataset, collator, None, batch_sampler, packed_collator, **evaluation)
    train = ExampleDataset(plan.train_examples, data, plan.backend, processor, skip_bad=True, source=source)
    if padding_free(settings.stage, settings.micro_batch_size, plan.backend, plan.attention):  # stage 2 under flex: one unpadded row
        collator = PaddingFreeCollator(plan.backend, pad_id, plan.attention.attn_implementation, dtype_for(settings.precision))
    # Grouped by the global batch, not by what one device takes, so the order is the same for any world size.
    sampler = SeededOrderSampler(train.lengths, settings.seed, group_size=settings.global_batch_size)
    return Datasets(train, eval_dataset, collator, sampler, None, None, **evaluation)


def build_session(plan: Plan, run: runs.Run, *, device: str, init_adapter: Any, resume_from: runs.Checkpoint | None, reporter: Reporter, lead: bool) -> Session:
    """Model, adapter, datasets, Trainer and callbacks for `run`."""
    from transformers.trainer_callback import PrinterCallback

    from vlmft_cli.lora_model import build_model, count_parameters
    from vlmft_cli.training.arguments import training_arguments
    from vlmft_cli.training.callbacks import FaultCallback, StopCallback, file_logger
    from vlmft_cli.training.memory import MemoryCap
    from vlmft_cli.training.trainer import CurriculumTrainer

    settings = plan.settings
    log = file_logger(run.logs_dir / runs.TRAINING_LOG, enabled=lead)
    cap = MemoryCap(settings.memory_cap_gb, plan.profile.hardware.unified_memory)
    cap_message = cap.apply() if device == "cuda" else None
    if cap_message:
        log.info(cap_message)
    model, loaded = build_model(settings, plan.backend, plan.attention, device=device, init_adapter=init_adapter)
    trainable, total = count_parameters(model)
    log.info("model %s (%s), %d trainable of %d parameters, attention %s", settings.model, loaded.source, trainable, total, plan.attention.attn_implementation)
    packed_note = f", packed {plan.packing.mean_qas_per_video:.2f} QAs per video" if plan.packed else ""
    reporter.info(f"{run.name}: stage {settings.stage}, {len(plan.train_examples)} training examples{packed_note}, {trainable:,} trainable parameters, accumulation {plan.accumulation}")

    data = build_datasets(plan, loaded.processor)
    args = training_arguments(settings, run, accumulation=plan.accumulation, device=device, evaluates=data.eval is not None)
    if "tensorboard" in settings.report_to.split(","):
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.logs_dir / "tensorboard")  # read by transformers' callback
    trainer = CurriculumTrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, data_collator=data.collator,
        order_sampler=data.order_sampler, train_batch_sampler=data.batch_sampler, train_collator=data.train_collator,
        eval_data=data.eval_data, eval_subset=data.eval_subset, run=run, keep_last=settings.keep_last, reporter=reporter,
    )  # fmt: skip
    if data.eval_subset is not None:
        message = (
            f"checkpoints evaluate a seeded subset of {len(data.eval_subset)} of {len(plan.val_examples)} val examples "
            f"(eval_limit {settings.eval_limit} QAs per task type); the last step evaluates all of them"
        )
        log.info(message)
        reporter.info(message)
    trainer.remove_callback(PrinterCallback)
    metrics, stop = _add_callbacks(trainer, plan, run, log, reporter)
    previous = (getattr(run.record(), "bad_samples", None) or []) if resume_from is not None else []
    faults = FaultCallback(trainer, log, reporter, settings.max_bad_samples, run.path if lead else None, previous)
    trainer.add_callback(faults)
    stopper = StopCallback(stop, cap, log, faults)
    trainer.add_callback(stopper)
    if resume_from is not None:
        _prepare_resume(trainer, run, resume_from, log, reporter, lead)
    return Session(run, trainer, metrics, stop, stopper, log, faults)


def _add_callbacks(trainer: Any, plan: Plan, run: runs.Run, log: logging.Logger, reporter: Reporter) -> tuple[Any, Any]:
    from vlmft_cli.pipeline.examples import task_type_counts
    from vlmft_cli.training.callbacks import MetricsCallback, SaveCadenceCallback, StopRequest

    settings = plan.settings
    metrics = MetricsCallback(trainer, run.logs_dir, reporter, sorted(task_type_counts(plan.val_examples)), log)
    trainer.add_callback(metrics)
    if settings.save_steps is None:
        hours = settings.save_every_hours or DEFAULT_SAVE_EVERY_HOURS
        trainer.add_callback(SaveCadenceCallback(hours, metrics, reporter, log, eval_follows=settings.eval_steps is None))
    return metrics, StopRequest()


def _prepare_resume(trainer: Any, run: runs.Run, checkpoint: runs.Checkpoint, log: logging.Logger, reporter: Reporter, lead: bool) -> None:
    """Drop metric rows logged after the checkpoint (work lost in the crash) and check the loss after it."""
    from vlmft_cli.training.callbacks import ResumeCheckCallback, read_csv, truncate_csv_after

    train_csv, eval_csv = run.logs_dir / runs.TRAIN_METRICS, run.logs_dir / runs.EVAL_METRICS
    previous = [float(row["loss"]) for row in read_csv(train_csv) if int(float(row["step"])) <= checkpoint.step]
    if lead:
        truncate_csv_after(train_csv, checkpoint.step)
        truncate_csv_after(eval_csv, checkpoint.step)
    trainer.add_callback(ResumeCheckCallback(previous, reporter, log))
    message = f"Resumed from checkpoint: step={checkpoint.step} ({checkpoint.path})"
    log.info(message)
    reporter.info(message)
