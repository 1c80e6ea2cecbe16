"""Data-parallel training with 2 CPU processes (gloo): the same loss curve as one process with the same
global batch, one run folder written by rank 0, and resume across world sizes."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from vlmft_cli import runs
from vlmft_cli.training.distributed import torchrun_command

ARGS = ["--stage", "1", "--profile", "cpu", "--global-batch-size", "8", "--save-steps", "2", "--workers", "0", "--lr", "1e-3"]


def env_for(home):
    return {**os.environ, "VLMFT_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def losses(out):
    (run,) = runs.list_runs(out)
    with (run.logs_dir / "train_metrics.csv").open() as handle:
        return run, [float(row["loss"]) for row in csv.DictReader(handle)]


def test_torchrun_command_drops_nproc():
    command = torchrun_command(2, ["train", "--nproc", "2", "--stage", "1", "--nproc=3"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert command[-3:] == ["train", "--stage", "1"]


def test_two_processes_match_one(processed_data, vlmft_home, tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    common = ["train", "--data", str(processed_data), *ARGS, "--max-steps", "4"]
    subprocess.run([sys.executable, "-m", "vlmft_cli", *common, "--out", str(single)], env=env_for(vlmft_home), check=True, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "vlmft_cli", *common, "--out", str(double), "--nproc", "2"], env=env_for(vlmft_home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished stage 1 at step 4") == 1  # rank 0 speaks for the run
    _, one = losses(single)
    run, two = losses(double)
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) <= 2e-3 * abs(a)  # same data per step; only dropout masks differ per rank
    assert run.record().hardware["processes"] == 2 and run.status == "finished"
    newest = run.good_checkpoints()[-1]
    assert newest.step == 4 and {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in newest.path.iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("pack", ["shared-prefix", "none"])
def test_resume_with_another_world_size(processed_data, vlmft_home, tmp_path, pack):
    """Killed in one process, resumed in two: the data position is counted in global samples, so the steps
    after the resume train on the same data as an uninterrupted single-process run, packed or not."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    common = ["train", "--data", str(processed_data), *ARGS, "--max-steps", "8", "--pack", pack]
    process = subprocess.Popen([sys.executable, "-m", "vlmft_cli", *common, "--out", str(killed)], env=env_for(vlmft_home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not any(killed.glob("*/checkpoints/checkpoint-4/vlmft_checkpoint.json")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    resume = torchrun_command(2, ["ckpt", "resume", "--latest", "--out", str(killed)])
    done = subprocess.run(resume, env=env_for(vlmft_home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resumed from checkpoint: step=" in done.stderr
    subprocess.run([sys.executable, "-m", "vlmft_cli", *common, "--out", str(reference)], env=env_for(vlmft_home), check=True, capture_output=True, timeout=300)
    run, curve = losses(killed)
    _, expected = losses(reference)
    assert run.status == "finished" and len(curve) == 8 and run.good_checkpoints()[-1].step == 8
    assert run.record().resumed[-1].processes == 2 and run.record().pack.mode == pack
    resumed_from = run.record().resumed[-1].step
    for step in range(resumed_from, 8):  # same data per step; only dropout masks differ per rank
        assert abs(curve[step] - expected[step]) <= 2e-3 * abs(expected[step]), (step, curve, expected)
