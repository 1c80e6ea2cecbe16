"""Crashes and stops, through the real CLI in a subprocess: SIGKILL then `ckpt resume --latest` gives the
same adapter as an uninterrupted run (stage 1 packs by default, so the packed batch plan is what resumes);
SIGTERM writes a checkpoint and exits with 143, also when it reaches the whole process group, dataloader
workers included (what `timeout`, systemd and Slurm send)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from vlmft_cli import runs

ARGS = ["--stage", "1", "--profile", "cpu", "--global-batch-size", "4", "--save-steps", "3", "--workers", "0", "--max-steps", "12", "--lr", "1e-3"]


def vlmft(*args, env_home):
    env = {**os.environ, "VLMFT_HOME": str(env_home), "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "vlmft_cli", *args], env


def wait_for(predicate, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "training ended before the point the test waits for"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def adapter(out):
    (run,) = runs.list_runs(out)
    return run, load_file(run.good_checkpoints()[-1].path / "adapter_model.safetensors")


def test_sigkill_then_resume_latest_matches_an_uninterrupted_run(processed_data, vlmft_home, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd, env = vlmft("train", "--data", str(processed_data), "--out", str(killed), *ARGS, env_home=vlmft_home)
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: any(killed.glob("*/checkpoints/checkpoint-6/vlmft_checkpoint.json")), process)
    time.sleep(0.1)  # mid-way between checkpoints
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (run,) = runs.list_runs(killed)
    assert run.status == "running" and max(c.step for c in run.good_checkpoints()) < 12

    cmd, env = vlmft("ckpt", "resume", "--latest", "--out", str(killed), env_home=vlmft_home)
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from checkpoint: step=" in resumed.stderr
    cmd, env = vlmft("train", "--data", str(processed_data), "--out", str(clean), *ARGS, env_home=vlmft_home)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)

    run, after_crash = adapter(killed)
    _, uninterrupted = adapter(clean)
    assert run.status == "finished" and run.good_checkpoints()[-1].step == 12
    assert run.record().pack.mode == "shared-prefix"
    for key, tensor in uninterrupted.items():
        assert (after_crash[key] - tensor).abs().max() <= 1e-6 * max(1.0, float(tensor.abs().max()))
    steps = [line.split(",")[0] for line in (run.logs_dir / "train_metrics.csv").read_text().splitlines()[1:]]
    assert steps == [str(s) for s in range(1, 13)]  # the log reads straight through the crash


def test_sigterm_saves_a_checkpoint_and_exits_143(processed_data, vlmft_home, tmp_path):
    cmd, env = vlmft("train", "--data", str(processed_data), "--out", str(tmp_path), *ARGS[:-4], "--max-steps", "400", "--save-steps", "1000", env_home=vlmft_home)
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(p.stat().st_size > 200 for p in tmp_path.glob("*/logs/train_metrics.csv")), process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr  # `vlmft train && vlmft eval` stops here
    assert "received SIGTERM" in stdout and "vlmft ckpt resume --latest" in stdout
    (run,) = runs.list_runs(tmp_path)
    assert run.status == "interrupted"
    assert 0 < run.good_checkpoints()[-1].step < 400


@pytest.mark.slow
@pytest.mark.parametrize("pack", ["shared-prefix", "none"])  # our batch-plan loader, and the one the Trainer builds
def test_sigterm_to_the_process_group_with_workers_stops_with_a_checkpoint(processed_data, vlmft_home, tmp_path, pack):
    args = ["--stage", "1", "--profile", "cpu", "--global-batch-size", "4", "--workers", "2", "--pack", pack, "--max-steps", "400", "--save-steps", "1000"]
    cmd, env = vlmft("train", "--data", str(processed_data), "--out", str(tmp_path), *args, env_home=vlmft_home)
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: any(len(p.read_text().splitlines()) > 1 for p in tmp_path.glob("*/logs/train_metrics.csv")), process)
    os.killpg(os.getpgid(process.pid), signal.SIGTERM)  # the main process and its dataloader workers
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "DataLoader worker" not in stderr, stderr
    assert "received SIGTERM" in stdout and "vlmft ckpt resume --latest" in stdout
    (run,) = runs.list_runs(tmp_path)
    assert run.status == "interrupted" and run.record().stop_reason == "received SIGTERM"
    assert 0 < run.good_checkpoints()[-1].step < 400 and run.good_checkpoints()[-1].problem(deep=True) is None
