"""Pruning keeps the newest N complete checkpoints plus the best, never the newest, and clears leftovers."""

import pytest

from ckpt.fabricate import add_checkpoint
from vlmft_cli.ckpt.listing import tree_size
from vlmft_cli.ckpt.prune import prune_runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.reporting import RecordingReporter


def _steps(run):
    return [c.step for c in run.checkpoints()]


def test_keeps_newest_n_plus_best(tmp_path, make_run):
    run = make_run(tmp_path, steps=(10, 20, 30, 40, 50), eval_losses={10: 2.0, 20: 0.5, 30: 1.0, 40: 1.5, 50: 1.2})
    sizes = {c.step: tree_size(c.path) for c in run.checkpoints()}
    result = prune_runs(tmp_path, keep=2)
    assert _steps(run) == [20, 40, 50]
    assert result.runs[0].kept == [20, 40, 50]
    assert sorted(r.step for r in result.removed) == [10, 30]
    assert result.freed_bytes == sizes[10] + sizes[30]
    assert not any(p.name.startswith(".") for p in run.checkpoints_dir.iterdir())


def test_never_removes_the_newest_complete_checkpoint(tmp_path, make_run, adapter_template):
    run = make_run(tmp_path, steps=(10, 20, 30), eval_losses={10: 0.1, 20: 0.9, 30: 0.8})
    add_checkpoint(run, 40, adapter_template.folder, marker=False)  # newer but incomplete
    prune_runs(tmp_path, keep=0)
    assert _steps(run) == [10, 30]  # the best and the newest complete one


def test_removes_incomplete_leftovers_and_staging(tmp_path, make_run, adapter_template):
    run = make_run(tmp_path, steps=(10, 20))
    broken = add_checkpoint(run, 15, adapter_template.folder)
    (broken.path / "optimizer.pt").unlink()
    add_checkpoint(run, 30, adapter_template.folder, marker=False)
    staging = run.checkpoints_dir / ".staging"
    staging.mkdir()
    (staging / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    result = prune_runs(tmp_path, keep=5)
    assert _steps(run) == [10, 20] and not staging.exists()
    reasons = {r.path.name: r.reason for r in result.removed}
    assert "optimizer.pt is missing" in reasons["checkpoint-15"]
    assert reasons["checkpoint-30"].startswith("incomplete: no completion marker")
    assert reasons[".staging"] == "unfinished checkpoint write"


def test_a_running_run_keeps_its_unfinished_writes(tmp_path, make_run, adapter_template):
    run = make_run(tmp_path, steps=(10, 20, 30), status="running")
    add_checkpoint(run, 40, adapter_template.folder, marker=False)
    reporter = RecordingReporter()
    prune_runs(tmp_path, keep=1, reporter=reporter)
    assert _steps(run) == [30, 40]
    assert "marked running" in reporter.warnings[0]


def test_dry_run_removes_nothing(tmp_path, make_run):
    run = make_run(tmp_path, steps=(10, 20, 30))
    result = prune_runs(tmp_path, keep=1, dry_run=True)
    assert result.dry_run and [r.step for r in result.removed] == [10, 20] and result.freed_bytes > 0
    assert _steps(run) == [10, 20, 30]


def test_experiment_scope_and_errors(tmp_path, make_run):
    alpha = make_run(tmp_path, "alpha", (10, 20))
    beta = make_run(tmp_path, "beta", (10, 20))
    prune_runs(tmp_path, keep=1, experiment="beta")
    assert _steps(alpha) == [10, 20] and _steps(beta) == [20]
    with pytest.raises(CheckpointError, match="no runs under .* for experiment 'gamma'"):
        prune_runs(tmp_path, keep=1, experiment="gamma")
    with pytest.raises(CheckpointError, match="--keep must be 0 or more"):
        prune_runs(tmp_path, keep=-1)
