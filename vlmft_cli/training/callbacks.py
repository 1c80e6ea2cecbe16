"""Trainer callbacks: metrics files and progress, checkpoint cadence in hours, memory guard, clean stop
on SIGTERM/Ctrl-C, and the loss check after a resume."""

from __future__ import annotations

import contextlib
import csv
import logging
import signal
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from vlmft_cli import runs
from vlmft_cli.reporting import Reporter
from vlmft_cli.training.memory import MemoryCap, peak_memory_gb

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
        self.eval_columns = ["step", "loss", "perplexity", *(f"loss_{t}" for t in task_types)]
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
        if "eval_loss" in logs:
            row = {"step": state.global_step, "loss": logs["eval_loss"], "perplexity": logs.get("eval_perplexity")}
            row.update({key[len("eval_") :]: value for key, value in logs.items() if key.startswith("eval_loss_")})
            append_csv(self.eval_csv, self.eval_columns, row)
            self.log.info("eval step %s loss %.4f perplexity %.4f", state.global_step, logs["eval_loss"], logs.get("eval_perplexity", float("nan")))
            self.reporter.info(f"eval step {state.global_step}: loss {logs['eval_loss']:.4f}, perplexity {logs.get('eval_perplexity', float('nan')):.4f}")

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


class StopCallback(TrainerCallback):
    """Ends training with a checkpoint when a signal arrived or the memory cap is breached."""

    def __init__(self, stop: StopRequest, cap: MemoryCap, log: logging.Logger) -> None:
        self.stop = stop
        self.cap = cap
        self.log = log
        self.reason: str | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stop.signal_name:
            self.reason = f"received {self.stop.signal_name}"
        else:
            breach = self.cap.breach()
            if breach:
                self.reason = f"memory cap: {breach}"
        if self.reason:
            self.log.warning("stopping at step %s: %s", state.global_step, self.reason)
            control.should_save = True
            control.should_training_stop = True


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
