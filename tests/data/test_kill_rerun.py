"""`vlmft data extract` killed with SIGKILL at random points, then rerun, ends byte-identical to an
uninterrupted run (JSONL, images, metadata.json but its timings)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vlmft_cli.data.extract import ExtractOptions, run_extract
from vlmft_cli.data.synth import SynthOptions, synthesize

from .builders import extracted_tree, video, write_source

REPO = Path(__file__).resolve().parents[2]
OPTIONS = {"size": 96, "quality": 85, "workers": 2}
KILLS = 3


def _start(source: Path, out: Path, capture: bool = False) -> subprocess.Popen:
    """`vlmft data extract` in its own process group, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    options = [f"--{key}={value}" for key, value in OPTIONS.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "vlmft_cli", "data", "extract", "--source", str(source), "--out", str(out), *options],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
    )


def _frames_written(out: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(out / "images"))


def _wait_for_frames(out: Path, target: int, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None and _frames_written(out) < target:
        time.sleep(0.005)


def _make_source(root: Path) -> Path:
    synthesize(SynthOptions(out=root, videos=40, val_videos=8, seed=11, shards=5))
    bad_frame = video("bad-frame")
    bad_frame.frames[1] = b"broken"
    write_source(root / "hostile", {"train": [[video("../unsafe"), bad_frame, video("no-qa", texts=["nothing"])]]})
    hostile_shard = root / "tfrecord" / "train" / "train-99999-hostile"
    (root / "hostile" / "train" / "train-00000-of-00001").rename(hostile_shard)
    hostile_shard.write_bytes(hostile_shard.read_bytes()[:-7])  # and truncated
    return root


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_bytes(tmp_path):
    source = _make_source(tmp_path / "source")
    reference = tmp_path / "reference"
    run_extract(ExtractOptions(str(source), reference, **OPTIONS))
    expected = extracted_tree(reference)
    total_frames = _frames_written(reference)

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Kill points: after random numbers of frames (each run resumes the last one's work), then once all
    # frames are written (merging, writing metadata.json, cleaning up).
    targets = [*sorted(rng.sample(range(1, total_frames), KILLS - 1)), total_frames]
    out = tmp_path / "out"
    interrupted = 0
    for attempt, target in enumerate(targets):
        process = _start(source, out)
        _wait_for_frames(out, target, process)
        if target == total_frames:
            time.sleep(rng.uniform(0.0, 0.05))
        workers = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        interrupted += process.poll() is None and not (out / "metadata.json").exists()
        with contextlib.suppress(ProcessLookupError):  # it may have just finished
            if attempt == 1:
                os.kill(process.pid, signal.SIGKILL)  # the main process only: its workers must die with it
            else:
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived their killed parent (seed {seed})"

    final = _start(source, out, capture=True)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr.decode()[-2000:]
    assert interrupted >= 2, f"only {interrupted} kills landed while extraction ran (seed {seed})"
    assert extracted_tree(out) == expected, f"output differs from an uninterrupted run (seed {seed})"
    assert not (out / ".extract").exists()
