"""`vlmft report` on real (tiny) runs: a stage-1 → stage-2 chain on one axis, plots and summary."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from vlmft_cli.cli.app import app
from vlmft_cli.errors import CheckpointError
from vlmft_cli.report.runs_data import chain_order, load_run
from vlmft_cli.report.summary import build_report
from vlmft_cli.runs import list_runs
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import TrainRequest, train


@pytest.fixture(scope="module")
def chain(processed_data, vlmft_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for stage in (1, 2):
        cli = {"data": processed_data, "out": out, "home": vlmft_home, "global_batch_size": 8, "max_steps": 3, "save_steps": 2, "dataloader_workers": 0}
        train(TrainRequest(settings=SettingsInput(stage=stage, profile="cpu", flags=cli, environ={})))
    return out


def test_chain_order_puts_stage2_after_stage1(chain):
    one, two = list_runs(chain)
    ordered = chain_order([load_run(two), load_run(one)])
    assert [item.run.name for item in ordered] == [one.name, two.name]
    assert ordered[1].step_offset == 3
    steps, _ = ordered[1].series(ordered[1].train, "loss")
    assert steps[0] == 4  # stage 2 continues the axis


def test_report_writes_plots_and_summary(chain, tmp_path):
    one, two = list_runs(chain)
    result = runner_invoke(["report", one.name, two.name, "--runs-dir", str(chain), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    image = Image.open(tmp_path / "training.png")
    assert image.size[0] > 800 and image.size[1] > 600
    summary = (tmp_path / "summary.md").read_text()
    assert "![training](training.png)" in summary
    assert f"| {one.name} | 1 | finished | 3 |" in summary and f"| {two.name} | 2 | finished | 3 |" in summary
    assert f"started from: {one.path}/checkpoints/checkpoint-3" in summary


def test_report_needs_runs(tmp_path):
    with pytest.raises(CheckpointError):
        build_report([], tmp_path, tmp_path / "r")
    result = runner_invoke(["report", "nothing-here", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no run 'nothing-here'" in result.output


def runner_invoke(args):
    return CliRunner().invoke(app, args)


def test_a_curve_keeps_the_checkpoint_subset_when_the_last_step_also_evaluated_everything():
    from vlmft_cli.report.runs_data import checkpoint_evals

    rows = [{"step": "2", "loss": "3.0", "eval_set": "subset"}, {"step": "4", "loss": "2.5", "eval_set": "subset"}, {"step": "4", "loss": "2.9", "eval_set": "full"}]
    assert [row["loss"] for row in checkpoint_evals(rows)] == ["3.0", "2.5"]
    plain = [{"step": "2", "loss": "3.0", "eval_set": "full"}, {"step": "4", "loss": "2.5"}]
    assert checkpoint_evals(plain) == plain
