"""`bench startup`'s measurement: launch → a new step's metrics row, peak memory, stop on a checkpoint;
driven here by a stand-in child whose timing, memory and output are known."""

from __future__ import annotations

import sys
import textwrap

import pytest

from vlmft_cli.bench.startup import StartupOptions, launch_to_step
from vlmft_cli.errors import DataError, VlmftError

# A child like a training run: it allocates `mb` MB, waits `delay` s, writes its metrics row for `step`,
# then its checkpoint, and exits 143 on SIGTERM (0 if none comes within 20 s).
CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    folder, step, delay, mb = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ballast = bytearray(mb << 20)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])
    time.sleep(delay)
    logs = folder / "run" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    csv = logs / "train_metrics.csv"
    rows = csv.read_text() if csv.exists() else "step,loss\\n"
    csv.write_text(rows + f"{step},1.0\\n")
    time.sleep(0.1)
    (folder / "run" / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    time.sleep(20)
    """
)


def _child(folder, step, delay=0.4, mb=150):
    return [sys.executable, "-c", CHILD, str(folder), str(step), str(delay), str(mb)]


def test_a_launch_is_timed_to_its_new_step_and_stopped_on_its_checkpoint(tmp_path):
    first = launch_to_step(_child(tmp_path, 1), tmp_path, "*/logs/train_metrics.csv", stop=True, timeout_s=15)
    assert first.step == 1
    assert 0.4 <= first.first_step_s < first.total_s < 15  # stopped long before its 20 s sleep ends
    assert first.peak_rss_mb >= 150
    # A resume: the row already there does not count, the next one does.
    resumed = launch_to_step(
        _child(tmp_path, 2, delay=0.6, mb=10), tmp_path, "*/logs/train_metrics.csv", stop=True, timeout_s=15
    )
    assert resumed.step == 2 and resumed.first_step_s >= 0.6
    assert resumed.peak_rss_mb < first.peak_rss_mb  # its own peak, not the earlier launch's


def test_a_launch_that_fails_or_never_steps_is_an_error_with_its_output(tmp_path):
    failing = [sys.executable, "-c", "import sys; print('model not found'); sys.exit(2)"]
    with pytest.raises(VlmftError, match=r"exit 2\).*model not found"):
        launch_to_step(failing, tmp_path, "*/logs/train_metrics.csv", timeout_s=15)


def test_options_are_checked():
    with pytest.raises(DataError):
        StartupOptions(lines=(0,))
    with pytest.raises(DataError):
        StartupOptions(repeat=0)
