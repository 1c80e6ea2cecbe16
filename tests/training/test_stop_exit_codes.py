"""A run that stops early exits non-zero, through the real CLI (in-process), so `vlmft train && vlmft eval`
stops too: 130 for Ctrl-C and 3 for the memory cap, each with the resume line; a memory-cap stop resumes
with a larger `--memory-cap-gb`, and `ckpt resume` exits as `train` does."""

import os
import signal

import pytest
from typer.testing import CliRunner

from vlmft_cli import runs
from vlmft_cli.cli.app import app
from vlmft_cli.training.memory import MemoryCap

runner = CliRunner()
FAST = ["--stage", "1", "--profile", "cpu", "--global-batch-size", "8", "--workers", "0", "--save-steps", "2", "--max-steps", "4"]


@pytest.fixture
def home(vlmft_home, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))


@pytest.mark.slow
def test_a_memory_cap_stop_exits_3_and_resumes_with_a_larger_cap(processed_data, tmp_path, home):
    out = tmp_path / "exp"
    stopped = runner.invoke(app, ["train", "--data", str(processed_data), "--out", str(out), *FAST, "--memory-cap-gb", "0.01"])
    assert stopped.exit_code == 3, stopped.output
    assert "memory cap: process memory" in stopped.stdout
    # The resume command on one line, to copy, with the knob to turn.
    assert f"Resume with: vlmft ckpt resume --latest --out {out} --memory-cap-gb GB" in stopped.stdout
    (run,) = runs.list_runs(out)
    assert run.status == "interrupted" and [c.step for c in run.good_checkpoints()] == [1]

    still_small = runner.invoke(app, ["ckpt", "resume", "--latest", "--out", str(out), "--memory-cap-gb", "0.02"])
    assert still_small.exit_code == 3, still_small.output  # `ckpt resume` exits as `train` does
    assert [c.step for c in run.good_checkpoints()] == [1, 2] and run.status == "interrupted"

    resumed = runner.invoke(app, ["ckpt", "resume", "--latest", "--out", str(out), "--memory-cap-gb", "1000"])
    assert resumed.exit_code == 0, resumed.output
    assert "memory_cap_gb 0.02 → 1000" in resumed.output  # applied and said aloud
    record = run.record()
    assert record.status == "finished" and record.global_step == 4 and run.good_checkpoints()[-1].step == 4
    assert record.resumed[-1].applied["memory_cap_gb"] == [0.02, 1000.0]


@pytest.mark.slow
def test_ctrl_c_stops_with_a_checkpoint_and_exits_130(processed_data, tmp_path, home, monkeypatch):
    out, calls = tmp_path / "exp", []

    def press_ctrl_c_at_step_two(self):  # the memory check runs at every step end: a hook to send SIGINT from
        calls.append(None)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MemoryCap, "breach", press_ctrl_c_at_step_two)
    result = runner.invoke(app, ["train", "--data", str(processed_data), "--out", str(out), *FAST[:-2], "--max-steps", "20"])
    assert result.exit_code == 128 + signal.SIGINT, result.output
    assert "received SIGINT" in result.stdout and f"Resume with: vlmft ckpt resume --latest --out {out}" in result.stdout
    (run,) = runs.list_runs(out)
    assert run.status == "interrupted" and run.record().stop_reason == "received SIGINT"
    assert run.good_checkpoints()[-1].step == 3 == run.record().global_step  # the step after the signal, saved


@pytest.mark.slow
def test_sigterm_to_every_process_during_an_evaluation_with_workers(processed_data, vlmft_home, tmp_path, monkeypatch):
    """What `kill -TERM -PGID` does mid-evaluation: the evaluation's workers (and training's) ignore it,
    the evaluation completes and the main process stops at the next step end with a checkpoint."""
    import psutil

    from vlmft_cli.evaluate import loss
    from vlmft_cli.settings import SettingsInput
    from vlmft_cli.training.recipe import TrainRequest, train

    real_positions, sent = loss.label_positions, []

    def signal_everyone_once(labels):  # runs in the main process, inside the evaluation loop
        if not sent:
            sent.extend(child.pid for child in psutil.Process().children(recursive=True))
            for pid in [*sent, os.getpid()]:
                os.kill(pid, signal.SIGTERM)
        return real_positions(labels)

    monkeypatch.setattr(loss, "label_positions", signal_everyone_once)
    flags = {"data": processed_data, "out": tmp_path, "home": vlmft_home, "global_batch_size": 8, "save_steps": 2, "max_steps": 6, "dataloader_workers": 2}
    result = train(TrainRequest(settings=SettingsInput(stage=1, profile="cpu", flags=flags, environ={})))
    assert len(sent) >= 2  # the workers were there to be signalled
    assert result.stop == "SIGTERM" and result.exit_code == 143 and result.global_step == 3
    run = runs.Run(result.run_dir)
    assert [c.step for c in run.good_checkpoints()] == [2, 3]
    assert [row.split(",")[0] for row in (run.logs_dir / "eval_metrics.csv").read_text().splitlines()[1:]] == ["2"]  # it completed
