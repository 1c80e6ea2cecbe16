"""`vlmft eval` (a group that evaluates when no subcommand follows) and `vlmft eval compare`."""

import json

import pytest
import typer
from typer.testing import CliRunner

from vlmft_cli.cli import eval_cmd
from vlmft_cli.cli.app import VlmftGroup
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import TrainRequest, train

runner = CliRunner()


def vlmft():
    """The eval group mounted on a root like `vlmft`'s (same error handling)."""
    root = typer.Typer(cls=VlmftGroup)

    @root.callback()
    def main() -> None:
        pass

    root.add_typer(eval_cmd.app)
    return root


@pytest.fixture(scope="module")
def trained(processed_data, vlmft_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-experiments")
    cli = {"data": processed_data, "out": out, "home": vlmft_home, "global_batch_size": 4, "max_steps": 1, "dataloader_workers": 0}
    result = train(TrainRequest(settings=SettingsInput(stage=1, profile="cpu", flags=cli, environ={})))
    return out, result


@pytest.fixture(autouse=True)
def _home(vlmft_home, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))


def test_help_shows_the_evaluation_options_and_compare():
    result = runner.invoke(vlmft(), ["eval", "--help"])
    assert result.exit_code == 0
    for word in ("--checkpoint", "--generate", "--batch-size", "--max-new-tokens", "--limit", "compare"):
        assert word in result.output


def test_eval_checkpoint_generate_json(trained, processed_data):
    out, result = trained
    args = ["eval", "--checkpoint", str(result.last_checkpoint), "--stage", "1", "--data", str(processed_data), "--limit", "3", "--generate", "--batch-size", "2", "--max-new-tokens", "4", "--runs-dir", str(out), "--json"]
    invoked = runner.invoke(vlmft(), args)
    assert invoked.exit_code == 0, invoked.output
    shown = json.loads(invoked.stdout)
    folder = result.run_dir / "eval" / "stage1-val-step1-limit3"
    assert shown["output_dir"] == str(folder)
    assert shown["metrics"]["overall"]["qas"] == 3 and shown["metrics"]["generation"]["batch_size"] == 2
    assert len((folder / "predictions.jsonl").read_text().splitlines()) == 3
    assert json.loads((folder / "metrics.json").read_text())["overall"]["bleu4"] == shown["metrics"]["overall"]["bleu4"]


def test_eval_table_then_compare_against_the_zero_shot_baseline(trained, processed_data):
    out, result = trained
    common = ["--stage", "1", "--data", str(processed_data), "--limit", "2", "--runs-dir", str(out)]
    zero = runner.invoke(vlmft(), ["eval", "--model", "tiny-internvl3", *common])
    assert zero.exit_code == 0, zero.output
    assert all(word in zero.stdout for word in ("(zero-shot)", "overall", "ppl", "QAs evaluated"))
    tuned = runner.invoke(vlmft(), ["eval", "--checkpoint", "latest", *common])
    assert tuned.exit_code == 0, tuned.output
    baseline, run = str(out / "zero-shot_tiny-internvl3"), str(result.run_dir)
    compared = runner.invoke(vlmft(), ["eval", "compare", baseline, run, "--json"])
    assert compared.exit_code == 0, compared.output
    document = json.loads(compared.stdout)
    loss = next(row for row in document["rows"] if row["group"] == "overall" and row["metric"] == "loss")
    assert loss["delta_pct"][1] == pytest.approx((loss["values"][1] - loss["values"][0]) / loss["values"][0] * 100)
    markdown = runner.invoke(vlmft(), ["eval", "compare", baseline, run, "--markdown"])
    assert markdown.exit_code == 0 and "| overall loss |" in markdown.stdout
    table = runner.invoke(vlmft(), ["eval", "compare", baseline, run])
    assert table.exit_code == 0 and "Δ%" in table.stdout


def test_errors_are_one_line_and_exit_2(tmp_path, processed_data):
    result = runner.invoke(vlmft(), ["eval", "--checkpoint", "latest", "--data", str(processed_data), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Error: no complete checkpoint" in result.output and "Traceback" not in result.output
    result = runner.invoke(vlmft(), ["eval", "compare", str(tmp_path)])
    assert result.exit_code == 2 and "holds no evaluation" in result.output
