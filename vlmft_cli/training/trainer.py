"""transformers' Trainer with vlmft's parts: our sampler (or, packed, our batch plan), our evaluation,
token counting, and checkpoints written into a staging folder, marked complete, then renamed into place.

The optimizer loop, schedule, accumulation, mixed precision, resume and distributed launch stay the
Trainer's. A packed run hands it a batch sampler whose micro-batches come in steps of exactly
`gradient_accumulation_steps`, so the Trainer's step boundaries, loss normalisation over the step's label
tokens and resume skipping (`accelerate.skip_first_batches`, which iterates the batch sampler without
fetching data) all line up with the plan.

Faults become clean stops or counted skips: dataloader workers ignore SIGINT/SIGTERM (the main process
stops with a checkpoint); unreadable samples reach `compute_loss` as a list in the batch (a micro-batch
left empty is a placeholder trained for a zero loss that keeps the graph); a non-finite loss or
gradient norm has its update dropped before the optimizer step (`close_step`), so NaN never reaches the
weights; a checkpoint write that fails is one `CheckpointError`, with the staging folder cleaned.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import seed_worker

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.evaluate.loss import EvalData, EvalResult, evaluate_loss
from vlmft_cli.fsutil import replace_folder
from vlmft_cli.label_loss import forward_with_loss, head_inputs
from vlmft_cli.pipeline.dataset import EMPTY_KEY, SKIPPED_KEY, BadSample, QuietWorkerInit
from vlmft_cli.pipeline.packed_dataset import STAT_KEYS
from vlmft_cli.pipeline.sampling import SeededOrderSampler
from vlmft_cli.reporting import NullReporter, Reporter

#: A pickle the Trainer writes into every checkpoint and never needs to resume; we never unpickle it.
TRAINING_ARGS_PICKLE = "training_args.bin"


@dataclass(frozen=True)
class StepCheck:
    """One optimizer step as every process saw it, just before the update (`close_step`)."""

    nonfinite: str | None  # "loss" or "gradient norm" when one was NaN/inf: the update was dropped
    skipped: list[BadSample]  # unreadable samples of this step, all processes
    samples: int  # samples (QAs when packed) trained in this step, all processes


class CurriculumTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        order_sampler: SeededOrderSampler | None,
        eval_data: EvalData | None,
        run: runs.Run,
        keep_last: int,
        reporter: Reporter | None = None,
        train_batch_sampler: torch.utils.data.Sampler | None = None,
        train_collator: Callable[[Any], dict[str, torch.Tensor]] | None = None,
        eval_subset: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        """`train_batch_sampler` with `train_collator` (packed training) replace the order sampler and the
        data collator for training. Evaluation reads `eval_data` (packed like training when it packs);
        `eval_subset` (indices into it, `eval_limit`) is what checkpoints evaluate, the last step all of it."""
        super().__init__(*args, **kwargs)
        self.order_sampler = order_sampler
        self.train_batch_sampler = train_batch_sampler
        self.train_collator = train_collator
        self.eval_data = eval_data
        self.eval_subset = eval_subset
        self.run = run
        self.keep_last = keep_last
        self.reporter = reporter or NullReporter()
        self.tokens_seen = 0
        self.samples_seen = 0
        self.last_eval: tuple[int, EvalResult] | None = None  # the latest evaluation (the whole split at the end)
        self.checkpoint_eval: tuple[int, EvalResult] | None = None  # its checkpoint set: what the marker records
        self._reset_step()

    def _reset_step(self) -> None:
        self.step_skipped: list[BadSample] = []
        self.step_samples = 0
        self.step_nonfinite: torch.Tensor | None = None  # any micro-batch loss NaN/inf (a tensor: no sync)

    # --- data ------------------------------------------------------------------------------------

    # Overrides, and why each is needed (the private ones are kept to these three):
    # - _get_train_sampler (private): the training order must be a pure function of (seed, epoch, lengths),
    #   so a resume replays it without reading data; the Trainer's own sampler is not.
    # - get_train_dataloader: a packed run's micro-batches come from our batch plan (a batch sampler).
    # - _run_epoch (private): see there.
    # - _prepare_inputs: a flex_attention batch's mask ids become a BlockMask on the device.
    # - compute_loss: counts tokens and QAs for the metrics, drops the packed batch's counters, collects
    #   the skipped samples and trains a placeholder micro-batch for a zero loss; the loss runs the head
    #   at labelled positions only (`vlmft_cli.label_loss`).
    # - training_step: notes a non-finite loss (read by `close_step`, from a callback before the update).
    # - evaluate: teacher-forced loss per task type with logits only at answer positions, on the
    #   checkpoint subset (`eval_limit`), and on the whole split at the last step.
    # - _save_checkpoint (private): checkpoints are staged, marked complete, then renamed into place.

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        return self.order_sampler

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """Workers ignore SIGINT/SIGTERM (then seed as the Trainer does): a signal to the process group
        is the main process's to handle, which stops with a checkpoint."""
        if self.train_batch_sampler is None:
            loader = super().get_train_dataloader()
            base = getattr(loader, "base_dataloader", loader)  # accelerate's wrapper iterates the DataLoader it holds
            base.worker_init_fn = QuietWorkerInit(base.worker_init_fn)  # read when the workers start
            return loader
        args = self.args
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=self.train_batch_sampler,
            collate_fn=self.train_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=QuietWorkerInit(partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index)),
        )
        return self.accelerator.prepare(loader)

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # After the move to the device: a flex_attention batch's document/block ids become its BlockMask there.
        from vlmft_cli.attention_masks import with_block_mask

        return with_block_mask(super()._prepare_inputs(inputs))

    def _run_epoch(self, **kwargs: Any) -> Any:
        # The Trainer reaches the sampler's set_epoch through accelerate's wrappers, but not through both
        # the resume skipper and the DDP shard at once; setting it here keeps the plan's epoch right always.
        if self.train_batch_sampler is not None:
            self.train_batch_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(**kwargs)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        stats = {key: inputs.pop(key) for key in STAT_KEYS if key in inputs}
        self.step_skipped.extend(inputs.pop(SKIPPED_KEY, None) or [])
        if inputs.pop(EMPTY_KEY, None) is not None:
            return self._placeholder_loss(model, inputs, return_outputs)
        if stats:  # packed: rows hold several QAs and the mask is 4-D
            tokens, samples = int(stats["num_tokens"]), int(stats["num_qas"])
        else:
            tokens, samples = int(inputs["attention_mask"].sum()), int(inputs["input_ids"].shape[0])
        self.tokens_seen += tokens
        self.samples_seen += samples
        self.step_samples += samples
        outputs = forward_with_loss(model, inputs, num_items_in_batch)
        loss = outputs.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # As the Trainer's own compute_loss: `num_items_in_batch` counts every process's label tokens,
            # and DDP averages the gradients over the processes.
            scale = self.accelerator.num_processes // getattr(self, "get_tp_size", lambda: 1)()
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _placeholder_loss(model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """Every sample of the micro-batch was skipped: a forward over the one-token placeholder, for a loss
        of exactly zero that still reaches every trained parameter. The step's other micro-batches train as
        usual (their loss is normalised by the step's label tokens, which the placeholder has none of), and
        under DDP this rank's backward still takes part in the gradient reduction. The head is not run:
        the zero is taken from the hidden states it would have been handed."""
        with head_inputs(model) as hidden:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=1)
        loss = hidden[0].float().sum() * 0.0
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        nonfinite = ~torch.isfinite(loss)
        self.step_nonfinite = nonfinite if self.step_nonfinite is None else self.step_nonfinite | nonfinite
        return loss

    def close_step(self) -> StepCheck:
        """Called before the optimizer step (after clipping): whether the loss or the gradient norm is NaN/inf
        on any process, and the step's skipped and trained samples over all processes. A non-finite step,
        or one with no sample at all, has its gradients dropped: the optimizer then leaves every weight as
        it was. Under fp16 the grad scaler already skips steps with inf gradients, so only the loss counts."""
        device = self.args.device
        loss_bad = self.step_nonfinite.to(device) if self.step_nonfinite is not None else torch.tensor(False, device=device)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads and self.accelerator.scaler is None:
            grads_bad = ~torch.isfinite(torch.nn.utils.get_total_norm(grads)).to(device)
        else:
            grads_bad = torch.tensor(False, device=device)
        counts = torch.tensor([len(self.step_skipped), self.step_samples], dtype=torch.float32, device=device)
        flags = torch.cat([torch.stack([loss_bad, grads_bad]).float(), counts])
        skipped = list(self.step_skipped)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            flags = self.accelerator.reduce(flags, reduction="sum")
            if float(flags[2]) > 0:
                skipped = list(gather_object(skipped))
        loss_bad_any, grads_bad_any, _, samples = flags.tolist()
        self._reset_step()
        nonfinite = "loss" if loss_bad_any else "gradient norm" if grads_bad_any else None
        if nonfinite or samples == 0:
            for parameter in self.model.parameters():
                parameter.grad = None
        return StepCheck(nonfinite, skipped, int(samples))

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The checkpoint set's metrics (`eval_limit`'s subset, or the whole split), logged with `_set` and
        `_qas`. At the last step the whole split is evaluated: its metrics are logged too, under
        `{prefix}_full`, and the checkpoint set's are taken from the same per-QA losses."""
        if self.eval_data is None or len(self.eval_data) == 0:
            return {}
        final = self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps
        subset = self.eval_subset
        result = evaluate_loss(
            self.model,
            self.eval_data,
            batch_size=self.args.per_device_eval_batch_size,
            device=self.args.device,
            workers=self.args.dataloader_num_workers,
            indices=None if final else subset,
        )
        on_checkpoint_set = result.subset(subset) if final and subset is not None else result
        step = self.state.global_step
        self.last_eval = (step, result)
        self.checkpoint_eval = (step, on_checkpoint_set)
        metrics = self._eval_metrics(on_checkpoint_set, metric_key_prefix, "subset" if subset is not None else "full")
        self.log(dict(metrics))
        if on_checkpoint_set is not result:
            self.log(self._eval_metrics(result, f"{metric_key_prefix}_full", "full"))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @staticmethod
    def _eval_metrics(result: EvalResult, prefix: str, eval_set: str) -> dict[str, Any]:
        return {**result.flat_metrics(prefix), f"{prefix}_qas": result.qas, f"{prefix}_set": eval_set}

    # --- checkpoints -----------------------------------------------------------------------------

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """A write that fails (disk full: OSError from us, RuntimeError from torch.save, SafetensorError
        from the adapter) is one CheckpointError; the staging folder is removed, the earlier checkpoints
        stay as they were."""
        from safetensors import SafetensorError

        from vlmft_cli.training.memory import is_out_of_memory

        step = self.state.global_step
        try:
            self._save_staged(model, trial, step)
        except (OSError, RuntimeError, SafetensorError) as exc:
            if is_out_of_memory(exc):
                raise
            if self.args.should_save:
                self._discard_staging()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(
                f"could not write checkpoint {step} in {self.run.checkpoints_dir}: {reason}; the earlier checkpoints are intact",
                hint="free disk space, then: vlmft ckpt resume --latest",
            ) from exc

    def _discard_staging(self) -> None:
        """Remove a failed checkpoint's staging folder, first putting back a checkpoint that was moved aside
        into it to be replaced (a failure between the two renames of `replace_folder`)."""
        staging = self.run.checkpoints_dir / runs.STAGING_DIR
        for aside in staging.glob(".checkpoint-*.replaced-*"):
            original = self.run.checkpoints_dir / aside.name[1:].split(".replaced-")[0]
            if not original.exists():
                os.replace(aside, original)
        shutil.rmtree(staging, ignore_errors=True)

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
        if self.checkpoint_eval is not None and self.checkpoint_eval[0] == step:
            # The checkpoint set's loss (the same QAs at every checkpoint), so the best is chosen fairly.
            extra["eval_loss"] = self.checkpoint_eval[1].overall.loss
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
