"""`vlmft bench startup`: launch to the first optimizer step at a given number of stage-1 lines, for a new
run (no plan cache) and for a resume (the plan cached by the run before), on the full-scale stand-in.

For each line count a stand-in is written once (`data.synth.synthesize_processed`, RoboVQA's QAs per
video and text mix, frames from a shared pool) under the work folder. Each measurement is a subprocess,
`python -m vlmft_cli train --stage 1 …` on the tiny model, stopped (SIGTERM) once its first step is
checkpointed, then resumed (`--resume latest`) and stopped the same way: its wall time from launch until a
new step's row appears in `logs/train_metrics.csv`, and
its peak resident memory (the largest process: `RUSAGE_CHILDREN` of a wrapper that runs only it). The
model's own load is measured apart (a subprocess that imports vlmft and loads the tiny model, no data)
and subtracted in `first_step_minus_model_load_s`. Medians over `repeat` runs.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli.bench.results import BenchDocument, Entry, significant
from vlmft_cli.errors import DataError, VlmftError
from vlmft_cli.reporting import NullReporter, Reporter

#: The issue's targets (seconds, GB): a new run at 723k lines, a resume with the cached plan, plan memory.
FIRST_STEP_TARGET_S = 60.0
RESUME_TARGET_S = 20.0
PLAN_MEMORY_TARGET_GB = 1.0
_POLL_S = 0.05

# Runs one command, passes SIGTERM on to it, and prints its peak RSS (KiB, the largest process among it
# and its waited-for children), the CPU seconds they used and its exit code.
_WRAPPER = (
    "import resource, signal, subprocess, sys; child = subprocess.Popen(sys.argv[1:]); "
    "signal.signal(signal.SIGTERM, lambda *_: child.terminate()); code = child.wait(); "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime, code)"
)


@dataclass(frozen=True)
class StartupOptions:
    lines: tuple[int, ...] = (10_000, 100_000, 722_979)
    repeat: int = 3
    model: str = "tiny-internvl3"
    work: Path | None = None  # stand-ins, runs and the plan cache; default: a temporary folder, removed
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if not self.lines or any(n < 4 for n in self.lines):
            raise DataError("--lines must name line counts of at least 4")
        if self.repeat < 1:
            raise DataError("--repeat must be at least 1")


@dataclass(frozen=True)
class Launch:
    first_step_s: float  # launch → the step's metrics row
    total_s: float  # launch → exit
    peak_rss_mb: float
    cpu_s: float  # user + system CPU seconds of the whole launch (less sensitive to other load than wall time)
    step: int = 0  # the new step reached first


def launch_to_step(
    command: Sequence[str], folder: Path, pattern: str, *, stop: bool = False, timeout_s: float = 1800.0
) -> Launch:
    """Run `command`; time it until a new optimizer step (a row past the last one already there) appears
    in a metrics CSV matching `pattern` under `folder`, and to its exit; its peak RSS. With `stop`, once
    that step's checkpoint (`checkpoints/checkpoint-N` beside the CSV's run) is in place the command gets
    SIGTERM, as a stopped run would (exit 143 is then expected). A command that fails or exits without a
    new step raises `VlmftError` with the end of its output."""
    import signal
    import threading

    before = _last_step(folder, pattern)
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first: float | None = None
    reached = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    stopped = False
    while process.poll() is None:
        step = _last_step(folder, pattern)
        if first is None and step > before:
            first, reached = time.perf_counter() - start, step
        if stop and first is not None and not stopped and any(folder.glob(f"*/checkpoints/checkpoint-{step}")):
            process.send_signal(signal.SIGTERM)
            stopped = True
        if time.perf_counter() - start > timeout_s:
            process.kill()
            raise VlmftError(f"{' '.join(command[:6])} … ran past {timeout_s:.0f} s")
        time.sleep(_POLL_S)
    total = time.perf_counter() - start
    reader.join(5)
    if first is None and _last_step(folder, pattern) > before:
        first, reached = total, _last_step(folder, pattern)
    last = output[-1].split() if output else []
    code = last[2] if len(last) == 3 else "?"
    if first is None or code not in (("0", "143") if stopped else ("0",)):
        raise VlmftError(
            f"{' '.join(command[:6])} … did not reach a new step (exit {code}): {''.join(output[-15:-1])[-1500:]}"
        )
    return Launch(first, total, int(last[0]) / 1024, float(last[1]), reached)


def _last_step(folder: Path, pattern: str) -> int:
    """The highest step in the metrics CSVs matching `pattern` under `folder` (0: none)."""
    last = 0
    for path in folder.glob(pattern):
        try:
            rows = path.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            head = row.split(",", 1)[0]
            if head.isdigit():
                last = max(last, int(head))
    return last


def _standin(work: Path, lines: int, reporter: Reporter) -> tuple[Path, int]:
    from vlmft_cli.data.layout import METADATA_FILE
    from vlmft_cli.data.synth import ROBOVQA_QAS_PER_VIDEO, ProcessedOptions, synthesize_processed

    data = work / f"standin-{lines}"
    if not (data / METADATA_FILE).is_file():
        reporter.info(f"writing the stand-in for {lines:,} stage-1 lines into {data}")
        synthesize_processed(
            ProcessedOptions(out=data, videos=max(1, round(lines / ROBOVQA_QAS_PER_VIDEO)), overwrite=True)
        )
    metadata = json.loads((data / METADATA_FILE).read_text())
    return data, int(metadata["splits"]["train"]["stage1_lines"])


def _train(data: Path, out: Path, home: Path, model: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "vlmft_cli", "train", "--stage", "1", "--data", str(data), "--model", model, "--profile", "cpu",
        "--out", str(out), "--home", str(home), "--max-steps", "100000", "--save-steps", "1", "--eval-steps", "1000000", "--eval-limit", "1", *extra,
    ]  # fmt: skip


def _model_load(model: str, home: Path, timeout_s: float) -> Launch:
    """Launch → the tiny model loaded, without data: the part of a start that is the model's own."""
    code = (
        "import sys, time; from pathlib import Path; from vlmft_cli.backends import backend_for; from vlmft_cli.model_backend import LoadOptions; "
        f"backend_for({model!r}).load({model!r}, LoadOptions(precision='fp32'), Path({str(home)!r})); "
        "Path(sys.argv[1]).write_text('step\\n1\\n')"
    )
    marker = Path(tempfile.mkdtemp(prefix="vlmft-load-"))
    try:
        return launch_to_step([sys.executable, "-c", code, str(marker / "m.csv")], marker, "m.csv", timeout_s=timeout_s)
    finally:
        shutil.rmtree(marker, ignore_errors=True)


def measure_startup(options: StartupOptions, reporter: Reporter | None = None, on_progress: Any = None) -> BenchDocument:
    """Stand-ins, then per line count `repeat` × (new run, resume); see the module docstring.
    `on_progress(document)` is called after each line count (to write what is measured so far)."""
    from vlmft_cli.bench.device import device_info
    from vlmft_cli.runtime import quiet_libraries

    quiet_libraries()  # the model-load measurement imports bitsandbytes, which logs about a missing package
    reporter = reporter or NullReporter()
    work = Path(options.work) if options.work else Path(tempfile.mkdtemp(prefix="vlmft-bench-startup-"))
    keep = options.work is not None
    document = BenchDocument(
        bench="startup",
        device=device_info("cpu"),
        parameters={
            "lines": list(options.lines),
            "repeat": options.repeat,
            "model": options.model,
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
        notes={
            "first_step_s": "launch of `vlmft train --stage 1` → its first optimizer step's row in train_metrics.csv (median)",
            "resume": "`vlmft train --resume latest` after it was stopped (SIGTERM): launch → its first new step, the plan read from the cache",
            "model_load_s": "launch → the tiny model loaded, no data (imports included); subtracted in first_step_minus_model_load_s",
            "targets": f"new run ≤ {FIRST_STEP_TARGET_S:.0f} s at 723k lines without the model's load; resume ≤ {RESUME_TARGET_S:.0f} s; plan ≤ {PLAN_MEMORY_TARGET_GB:.0f} GB",
        },
    )
    try:
        home = work / "home"
        launches = options.repeat * (1 + 2 * len(options.lines))
        with reporter.progress("bench startup", total=launches, unit="launches") as task:
            _measure_all(options, work, home, document, reporter, task, on_progress)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    document.parameters["load_average_after"] = list(os.getloadavg())
    return document


def _measure_all(options: StartupOptions, work: Path, home: Path, document: BenchDocument, reporter: Reporter, task: Any, on_progress: Any) -> None:
    """The model-load launches, then per line count its stand-in and `repeat` × (new run, resume); each
    launch advances `task`, and the entries go into `document`."""
    from vlmft_cli.pipeline.length_cache import CACHE_DIR

    load = []
    for _ in range(options.repeat):
        load.append(_model_load(options.model, home, options.timeout_s))
        task.advance()
    model_load_s = statistics.median(launch.first_step_s for launch in load)
    for lines in options.lines:
        data, actual = _standin(work, lines, reporter)
        runs: dict[str, list[Launch]] = {"start": [], "resume": []}
        for attempt in range(options.repeat):
            reporter.info(f"{actual:,} lines: run {attempt + 1} of {options.repeat}")
            out = work / f"runs-{lines}-{attempt}"
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(home / CACHE_DIR, ignore_errors=True)
            metrics = "*/logs/train_metrics.csv"
            runs["start"].append(launch_to_step(_train(data, out, home, options.model), out, metrics, stop=True, timeout_s=options.timeout_s))
            task.advance()
            resume = _train(data, out, home, options.model, "--resume", "latest")
            runs["resume"].append(launch_to_step(resume, out, metrics, stop=True, timeout_s=options.timeout_s))
            task.advance()
            shutil.rmtree(out, ignore_errors=True)
        for phase, launches in runs.items():
            first = statistics.median(launch.first_step_s for launch in launches)
            document.entries.append(
                Entry(
                    key={"lines": actual, "phase": phase},
                    metrics={
                        "first_step_s": significant(first),
                        "first_step_minus_model_load_s": significant(first - model_load_s),
                        "model_load_s": significant(model_load_s),
                        "peak_rss_mb": significant(statistics.median(launch.peak_rss_mb for launch in launches)),
                        "cpu_s": significant(statistics.median(launch.cpu_s for launch in launches)),
                    },
                    details={
                        "first_step_s_all": [round(launch.first_step_s, 2) for launch in launches],
                        "cpu_s_all": [round(launch.cpu_s, 2) for launch in launches],
                        "step_reached": [launch.step for launch in launches],
                        "target_s": RESUME_TARGET_S if phase == "resume" else FIRST_STEP_TARGET_S,
                    },
                )
            )
        if on_progress is not None:
            on_progress(document)


def startup_rows(document: BenchDocument) -> list[list[Any]]:
    """Table rows: lines, phase, first step, minus the model's load, peak memory, CPU seconds."""
    rows = []
    for entry in document.entries:
        metrics = entry.metrics
        rows.append(
            [
                f"{entry.key['lines']:,}",
                entry.key["phase"],
                f"{metrics['first_step_s']:.1f}",
                f"{metrics['first_step_minus_model_load_s']:.1f}",
                f"{metrics['peak_rss_mb']:.0f}",
                f"{metrics['cpu_s']:.1f}",
            ]
        )
    return rows
