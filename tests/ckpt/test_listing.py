"""Listing runs and checkpoints: steps, stage, status, eval loss, size, complete flags, best."""

from ckpt.fabricate import add_checkpoint
from vlmft_cli.ckpt.listing import STAGING_PROBLEM, summarize_runs, tree_size
from vlmft_cli.runs import MARKER_FILE


def test_runs_steps_and_complete_flags(tmp_path, make_run, adapter_template):
    stage1 = make_run(tmp_path, "alpha", (10, 20), {10: 2.5, 20: 1.25}, stamp="20260101-120000")
    stage2 = make_run(tmp_path, "beta", (5,), stage=2, status="failed", stamp="20260102-120000")
    add_checkpoint(stage2, 15, adapter_template.folder, marker=False)
    (stage1.path / "checkpoints" / "checkpoint-20" / "optimizer.pt").unlink()
    (stage2.checkpoints_dir / ".staging").mkdir()
    (stage2.checkpoints_dir / ".staging" / "partial.bin").write_bytes(b"x" * 10)

    runs = summarize_runs(tmp_path)

    assert [(r.name, r.stage, r.status) for r in runs] == [(stage1.name, 1, "finished"), (stage2.name, 2, "failed")]
    alpha, beta = runs
    assert [(c.step, c.complete, c.eval_loss) for c in alpha.checkpoints] == [(10, True, 2.5), (20, False, 1.25)]
    assert "optimizer.pt is missing" in alpha.checkpoints[1].problem
    assert alpha.checkpoints[0].best  # the lower loss belongs to a broken checkpoint
    assert [(c.step, c.complete) for c in beta.checkpoints] == [(5, True), (15, False), (None, False)]
    assert MARKER_FILE in beta.checkpoints[1].problem
    assert beta.checkpoints[2].problem == STAGING_PROBLEM and beta.checkpoints[2].size_bytes == 10
    assert beta.checkpoints[0].stage == 2 and not beta.checkpoints[0].best  # no eval loss recorded
    expected = sum(p.stat().st_size for p in alpha.checkpoints[0].path.iterdir())
    assert alpha.checkpoints[0].size_bytes == expected == tree_size(alpha.checkpoints[0].path)


def test_experiment_filter_and_missing_folder(tmp_path, make_run):
    make_run(tmp_path, "alpha", (10,))
    make_run(tmp_path, "beta", (10,))
    assert [r.name for r in summarize_runs(tmp_path, experiment="beta")] == ["beta_20260101-120000"]
    assert summarize_runs(tmp_path / "nowhere") == []


def test_best_is_lowest_eval_loss_among_complete(tmp_path, make_run):
    run = make_run(tmp_path, steps=(10, 20, 30), eval_losses={10: 3.0, 20: 1.0, 30: 2.0})
    (summary,) = summarize_runs(tmp_path)
    assert [c.step for c in summary.checkpoints if c.best] == [20]
    assert summary.to_dict()["checkpoints"][1] | {"size_bytes": 0} == {
        "path": str(run.checkpoints_dir / "checkpoint-20"),
        "step": 20,
        "stage": 1,
        "eval_loss": 1.0,
        "size_bytes": 0,
        "complete": True,
        "best": True,
        "problem": None,
    }
