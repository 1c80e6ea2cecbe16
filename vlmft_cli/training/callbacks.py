"""Trainer callbacks: metrics files and progress, checkpoint cadence in hours, memory guard, clean stop
on SIGTERM/Ctrl-C, non-finite steps and unreadable samples (`FaultCallback`), and the loss check after a
resume."""

from __future__ import annotations

import contextlib
import csv
import logging
import signal
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from vlmft_cli import runs
from vlmft_cli.reporting import Reporter
from vlmft_cli.training.memory import MemoryCap, peak_memory_gb
from vlmft_cli.training.request import StopKind

TRAIN_COLUMNS = ["step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "step_time_s", "peak_memory_gb"]


def append_csv(path: Path, columns: list[str], row: dict[str, Any]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def truncate_csv_after(path: Path, step: int) -> None:
    """Drop rows logged after `step` (work lost in a crash), so a resumed log reads straight through."""
    from vlmft_cli.fsutil import atomic_write_text

    rows = read_csv(path)
    if not rows:
        return
    kept = [row for row in rows if int(float(row["step"])) <= step]
    if len(kept) == len(rows):
        return
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(kept)
    atomic_write_text(path, buffer.getvalue())


def file_logger(path: Path, enabled: bool = True) -> logging.Logger:
    """training.log of a run; `enabled=False` (ranks other than 0) gives a logger that writes nothing."""
    logger = logging.getLogger(f"vlmft.run.{path.parent.parent.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not enabled:
        logger.disabled = True
        return logger
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in logger.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


class MetricsCallback(TrainerCallback):
    """train_metrics.csv, eval_metrics.csv, training.log and the progress bar."""

    def __init__(self, trainer: Any, logs_dir: Path, reporter: Reporter, task_types: list[str], log: logging.Logger) -> None:
        self.trainer = trainer
        self.train_csv = logs_dir / runs.TRAIN_METRICS
        self.eval_csv = logs_dir / runs.EVAL_METRICS
        # qas and eval_set: how many QAs the row covers, and whether they are the checkpoint subset
        # (`eval_limit`) or the whole split (every evaluation without eval_limit, and the last step's).
        self.eval_columns = ["step", "loss", "perplexity", *(f"loss_{t}" for t in task_types), "qas", "eval_set"]
        self.reporter = reporter
        self.log = log
        self.step_times: list[float] = []
        self._step_start = 0.0
        self._window_start = 0.0
        self._tokens_at_window = 0
        self._samples_at_window = 0
        self._stack = ExitStack()
        self._task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._task = self._stack.enter_context(self.reporter.progress("train", total=state.max_steps, unit="steps"))
            self._task.update(completed=state.global_step)
        self._window_start = time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_times.append(time.perf_counter() - self._step_start)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        if "loss" in logs:
            elapsed = max(now - self._window_start, 1e-9)
            row = {
                "step": state.global_step,
                "epoch": round(float(logs.get("epoch", state.epoch or 0)), 4),
                "loss": logs["loss"],
                "lr": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens_per_s": round((self.trainer.tokens_seen - self._tokens_at_window) / elapsed, 2),
                "samples_per_s": round((self.trainer.samples_seen - self._samples_at_window) / elapsed, 3),
                "step_time_s": round(self.step_times[-1], 4) if self.step_times else None,
                "peak_memory_gb": round(peak_memory_gb(), 3),
            }
            self._window_start, self._tokens_at_window, self._samples_at_window = now, self.trainer.tokens_seen, self.trainer.samples_seen
            append_csv(self.train_csv, TRAIN_COLUMNS, row)
            self.log.info("step %(step)s loss %(loss).4f lr %(lr).3g grad_norm %(grad_norm)s tokens/s %(tokens_per_s)s", row)
            if self._task is not None:
                self._task.update(completed=state.global_step, loss=float(row["loss"]), lr=float(row["lr"] or 0), tok_s=row["tokens_per_s"])
        for prefix in ("eval", "eval_full"):  # the checkpoint set, then (last step) the whole split
            if f"{prefix}_loss" not in logs:
                continue
            loss, perplexity, eval_set = logs[f"{prefix}_loss"], logs.get(f"{prefix}_perplexity", float("nan")), logs.get(f"{prefix}_set", "full")
            row = {"step": state.global_step, "loss": loss, "perplexity": perplexity, "qas": logs.get(f"{prefix}_qas"), "eval_set": eval_set}
            row.update({key[len(prefix) + 1 :]: value for key, value in logs.items() if key.startswith(f"{prefix}_loss_")})
            append_csv(self.eval_csv, self.eval_columns, row)
            self.log.info("eval step %s (%s, %s QAs) loss %.4f perplexity %.4f", state.global_step, eval_set, row["qas"], loss, perplexity)
            self.reporter.info(f"eval step {state.global_step} ({eval_set}, {row['qas']} QAs): loss {loss:.4f}, perplexity {perplexity:.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stack.close()

    def median_step_time(self) -> float | None:
        return statistics.median(self.step_times) if self.step_times else None


class SaveCadenceCallback(TrainerCallback):
    """Turns `save_every_hours` into steps from the measured step time (`H × 3600 / step_time`)."""

    def __init__(self, hours: float, metrics: MetricsCallback, reporter: Reporter, log: logging.Logger, eval_follows: bool, warmup_steps: int = 3) -> None:
        self.hours = hours
        self.metrics = metrics
        self.reporter = reporter
        self.log = log
        self.eval_follows = eval_follows
        self.warmup_steps = warmup_steps
        self.decided = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.decided or len(self.metrics.step_times) < self.warmup_steps:
            return
        step_time = statistics.median(self.metrics.step_times[-self.warmup_steps :])
        steps = max(1, round(self.hours * 3600 / max(step_time, 1e-9)))
        state.save_steps = steps
        if self.eval_follows:
            state.eval_steps = steps
        self.decided = True
        message = f"checkpoint every {steps} steps (every {self.hours:g} h at {step_time:.3g} s/step)"
        self.reporter.info(message)
        self.log.info(message)


class StopRequest:
    """Set by SIGTERM/SIGINT; the first signal asks for a checkpoint and a clean exit, a second one
    falls back to the default behaviour."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handler, nothing to restore
                self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@dataclass(frozen=True)
class Stop:
    """Why training stops early (`kind`, a StopKind) and whether the step it stops at is saved."""

    kind: str
    reason: str
    saves: bool = True


class StopCallback(TrainerCallback):
    """Ends training when a signal arrived, the memory cap is breached or `faults` asks (a non-finite
    step, too many unreadable samples): with a checkpoint, except after a non-finite step, whose weights
    are not saved (the newest checkpoint stays the last good one). A non-finite step wins over a signal,
    a signal over the others."""

    def __init__(self, stop: StopRequest, cap: MemoryCap, log: logging.Logger, faults: FaultCallback | None = None) -> None:
        self.stop = stop
        self.cap = cap
        self.log = log
        self.faults = faults
        self.decided: Stop | None = None

    @property
    def reason(self) -> str | None:
        return self.decided.reason if self.decided else None

    def _decide(self) -> Stop | None:
        fault = self.faults.stop if self.faults is not None else None
        if fault is not None and fault.kind == StopKind.NON_FINITE.value:
            return fault
        if self.stop.signal_name:
            return Stop(self.stop.signal_name, f"received {self.stop.signal_name}")
        if fault is not None:
            return fault
        breach = self.cap.breach()
        return Stop(StopKind.MEMORY_CAP.value, f"memory cap: {breach}") if breach else None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.decided is None:
            self.decided = self._decide()
        if self.decided is None:
            return
        self.log.warning("stopping at step %s: %s", state.global_step, self.decided.reason)
        control.should_training_stop = True
        control.should_save = self.decided.saves
        if not self.decided.saves:
            control.should_evaluate = False


class FaultCallback(TrainerCallback):
    """Before every optimizer step (`CurriculumTrainer.close_step`, which drops a non-finite update):
    a NaN/inf loss or gradient norm asks for a stop without saving that step; unreadable samples are
    logged, counted by distinct JSONL line and listed in run.json (`bad_samples`, kept across resumes),
    and more than `max_bad_samples` of them ask for a stop with a checkpoint. Unreadable evaluation
    samples are logged and listed too; they never stop the run. `record_dir` is the run folder on the
    process that writes run.json (rank 0), None elsewhere."""

    def __init__(self, trainer: Any, log: logging.Logger, reporter: Reporter, max_bad_samples: int, record_dir: Path | None, previous: Sequence[dict[str, Any]] = ()) -> None:
        self.trainer = trainer
        self.log = log
        self.reporter = reporter
        self.max_bad_samples = max_bad_samples
        self.record_dir = record_dir
        self.seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for entry in previous:
            if isinstance(entry, dict):
                self.seen.setdefault(self._key(entry), entry)
        self.stop: Stop | None = None

    @staticmethod
    def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
        return (entry.get("split"), entry.get("file"), entry.get("line"), entry.get("id"))

    def bad(self, split: str = "train") -> list[dict[str, Any]]:
        return [entry for entry in self.seen.values() if entry.get("split") == split]

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step + 1
        check = self.trainer.close_step()
        self._count(check.skipped, "train", step)
        if check.nonfinite and (self.stop is None or self.stop.kind != StopKind.NON_FINITE.value):
            reason = f"non-finite {check.nonfinite} (NaN or inf) at step {step}; its update was dropped and the step is not saved"
            self.stop = Stop(StopKind.NON_FINITE.value, reason, saves=False)
            self.log.error("%s", reason)
        bad = self.bad("train")
        if self.stop is None and len(bad) > self.max_bad_samples:
            first = ", ".join(str(entry.get("where")) for entry in bad[:3])
            self.stop = Stop(StopKind.BAD_SAMPLES.value, f"{len(bad)} unreadable training samples, more than max_bad_samples {self.max_bad_samples} (first: {first})")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        last = self.trainer.last_eval
        if last is not None:
            self._count(last[1].skipped, "val", state.global_step)

    def _count(self, samples: Sequence[Any], split: str, step: int) -> None:
        new = []
        for sample in samples:
            entry = {"split": split, **sample.as_dict(), "where": sample.where, "step": step}
            key = self._key(entry)
            if key not in self.seen:
                self.seen[key] = entry
                new.append(sample)
        if not new:
            return
        for sample in new:
            self.log.warning("skipped an unreadable %s sample at step %s: %s", split, step, sample)
        total = len(self.bad(split))
        self.reporter.warning(f"skipped {len(new)} unreadable {split} sample(s) at step {step} ({total} so far; first: {new[0]})")
        if self.record_dir is not None:
            from vlmft_cli.run_record import update_record

            update_record(self.record_dir, bad_samples=list(self.seen.values()))


def loss_change_message(before: float, after: float) -> str:
    """The loss after a resume against before it, with the signed relative change (a drop is negative)."""
    change = (after - before) / max(abs(before), 1e-8)
    return f"loss after resume {after:.4f} vs {before:.4f} before it ({change:+.1%})"


class ResumeCheckCallback(TrainerCallback):
    """After a resume, compares the first logged losses with the last ones before the checkpoint."""

    def __init__(self, previous_losses: list[float], reporter: Reporter, log: logging.Logger, tolerance: float = 0.5, window: int = 3) -> None:
        self.previous = previous_losses[-window:]
        self.reporter = reporter
        self.log = log
        self.tolerance = tolerance
        self.window = window
        self.seen: list[float] = []
        self.done = not self.previous

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.done or not logs or "loss" not in logs:
            return
        self.seen.append(float(logs["loss"]))
        if len(self.seen) < min(self.window, len(self.previous)):
            return
        self.done = True
        before, after = statistics.mean(self.previous), statistics.mean(self.seen)
        message = loss_change_message(before, after)
        self.log.info(message)
        if abs(after - before) / max(abs(before), 1e-8) > self.tolerance:
            self.reporter.warning(f"{message}: more than {self.tolerance:.0%} apart; check that the right checkpoint and data were used")
        else:
            self.reporter.info(message)
