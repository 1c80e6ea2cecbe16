"""transformers' Trainer with vlmft's parts: our sampler (or, packed, our batch plan), our evaluation,
token counting, and checkpoints written into a staging folder, marked complete, then renamed into place.

The optimizer loop, schedule, accumulation, mixed precision, resume and distributed launch stay the
Trainer's. A packed run hands it a batch sampler whose micro-batches come in steps of exactly
`gradient_accumulation_steps`, so the Trainer's step boundaries, loss normalisation over the step's label
tokens and resume skipping (`accelerate.skip_first_batches`, which iterates the batch sampler without
fetching data) all line up with the plan.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import seed_worker

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.evaluate.loss import EvalResult, evaluate_loss
from vlmft_cli.fsutil import replace_folder
from vlmft_cli.pipeline.dataset import ExampleDataset
from vlmft_cli.pipeline.packed_dataset import STAT_KEYS
from vlmft_cli.pipeline.sampling import SeededOrderSampler
from vlmft_cli.reporting import NullReporter, Reporter

#: A pickle the Trainer writes into every checkpoint and never needs to resume; we never unpickle it.
TRAINING_ARGS_PICKLE = "training_args.bin"


class CurriculumTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        order_sampler: SeededOrderSampler | None,
        eval_examples: ExampleDataset | None,
        run: runs.Run,
        keep_last: int,
        reporter: Reporter | None = None,
        train_batch_sampler: torch.utils.data.Sampler | None = None,
        train_collator: Callable[[Any], dict[str, torch.Tensor]] | None = None,
        **kwargs: Any,
    ) -> None:
        """`train_batch_sampler` with `train_collator` (packed training) replace the order sampler and the
        data collator for training; evaluation keeps `data_collator`."""
        super().__init__(*args, **kwargs)
        self.order_sampler = order_sampler
        self.train_batch_sampler = train_batch_sampler
        self.train_collator = train_collator
        self.eval_examples = eval_examples
        self.run = run
        self.keep_last = keep_last
        self.reporter = reporter or NullReporter()
        self.tokens_seen = 0
        self.samples_seen = 0
        self.last_eval: tuple[int, EvalResult] | None = None

    # --- data ------------------------------------------------------------------------------------

    # Overrides, and why each is needed (the private ones are kept to these three):
    # - _get_train_sampler (private): the training order must be a pure function of (seed, epoch, lengths),
    #   so a resume replays it without reading data; the Trainer's own sampler is not.
    # - get_train_dataloader: a packed run's micro-batches come from our batch plan (a batch sampler).
    # - _run_epoch (private): see there.
    # - compute_loss: counts tokens and QAs for the metrics, and drops the packed batch's counters.
    # - evaluate: teacher-forced loss per task type with logits only at answer positions.
    # - _save_checkpoint (private): checkpoints are staged, marked complete, then renamed into place.

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        return self.order_sampler

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if self.train_batch_sampler is None:
            return super().get_train_dataloader()
        args = self.args
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=self.train_batch_sampler,
            collate_fn=self.train_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)

    def _run_epoch(self, **kwargs: Any) -> Any:
        # The Trainer reaches the sampler's set_epoch through accelerate's wrappers, but not through both
        # the resume skipper and the DDP shard at once; setting it here keeps the plan's epoch right always.
        if self.train_batch_sampler is not None:
            self.train_batch_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(**kwargs)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        stats = {key: inputs.pop(key) for key in STAT_KEYS if key in inputs}
        if stats:  # packed: rows hold several QAs and the mask is 4-D
            self.tokens_seen += int(stats["num_tokens"])
            self.samples_seen += int(stats["num_qas"])
        else:
            self.tokens_seen += int(inputs["attention_mask"].sum())
            self.samples_seen += int(inputs["input_ids"].shape[0])
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.eval_examples is None or len(self.eval_examples) == 0:
            return {}
        result = evaluate_loss(
            self.model,
            self.eval_examples,
            self.data_collator,
            batch_size=self.args.per_device_eval_batch_size,
            device=self.args.device,
        )
        self.last_eval = (self.state.global_step, result)
        metrics = result.flat_metrics(metric_key_prefix)
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # --- checkpoints -----------------------------------------------------------------------------

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        step = self.state.global_step
        try:
            self._save_staged(model, trial, step)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CheckpointError(
                f"could not write checkpoint {step} in {self.run.checkpoints_dir}: {reason}; the earlier checkpoints are intact",
                hint="free disk space, then: vlmft ckpt resume --latest",
            ) from exc

    def _save_staged(self, model: Any, trial: Any, step: int) -> None:
        """Write into .staging (every rank its part), then rank 0 marks it complete and renames it."""
        staging = self.run.checkpoints_dir / runs.STAGING_DIR
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        output_dir, self.args.output_dir = self.args.output_dir, str(staging)  # the Trainer saves under args.output_dir
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = output_dir
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in before the folder moves
        if not self.args.should_save:
            return
        written = staging / f"checkpoint-{step}"
        (written / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
        extra: dict[str, Any] = {"run": self.run.name, "stage": self.run.stage}
        if self.last_eval is not None and self.last_eval[0] == step:
            extra["eval_loss"] = self.last_eval[1].overall.loss
        runs.write_marker(written, step, extra)
        final = self.run.checkpoints_dir / f"checkpoint-{step}"
        # Re-saving a step (an interrupt right after a save) replaces it whole; the old one waits in .staging.
        replace_folder(written, final, aside_dir=staging)
        shutil.rmtree(staging, ignore_errors=True)
        self.reporter.info(f"Saved checkpoint: step={step} → {final}")
        self._prune()

    def _prune(self) -> None:
        from vlmft_cli.ckpt.prune import plan_run, remove_folder

        for removal in plan_run(self.run, self.keep_last).removed:
            if removal.step is not None:  # complete checkpoints only: this run is still writing
                remove_folder(removal.path)
                self.reporter.info(f"Removed old checkpoint {removal.path.name}")
