"""`vlmft ckpt …` end to end through the CLI: JSON listing, exit codes, one-line errors, outputs."""

import json

import pytest
import typer
from ckpt.fabricate import adapter_template, make_run  # noqa: F401 - fixtures
from typer.testing import CliRunner

from vlmft_cli.cli import ckpt_cmd
from vlmft_cli.cli.app import VlmftGroup

# The ckpt group under a root with the real error handling (the real root mounts the same `ckpt_cmd.app`).
root = typer.Typer(cls=VlmftGroup)
root.add_typer(ckpt_cmd.app)
runner = CliRunner()


@pytest.fixture
def out(tmp_path, monkeypatch, adapter_template, make_run):  # noqa: F811 - fixtures imported above
    """Two runs under an experiments folder that is the default through VLMFT_OUT."""
    folder = tmp_path / "experiments"
    make_run(folder, "alpha", (10, 20, 30), {10: 1.5, 20: 2.5}, stamp="20260101-120000")
    make_run(folder, "beta", (5,), stage=2, stamp="20260102-120000")
    monkeypatch.setenv("VLMFT_OUT", str(folder))
    monkeypatch.setenv("VLMFT_HOME", str(adapter_template.home))
    return folder


def test_list_json_and_table(out):
    result = runner.invoke(root, ["ckpt", "list", "--json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert [(r["run"], r["stage"], r["status"]) for r in runs] == [("alpha_20260101-120000", 1, "finished"), ("beta_20260102-120000", 2, "finished")]
    assert [(c["step"], c["complete"], c["best"], c["eval_loss"]) for c in runs[0]["checkpoints"]] == [(10, True, True, 1.5), (20, True, False, 2.5), (30, True, False, None)]
    assert all(c["size_bytes"] > 0 for r in runs for c in r["checkpoints"])
    table = runner.invoke(root, ["ckpt", "list", "--experiment", "alpha"])
    assert table.exit_code == 0 and "yes (best)" in table.output and "beta" not in table.output
    empty = runner.invoke(root, ["ckpt", "list", "--out", str(out / "none")])
    assert empty.exit_code == 0 and "No runs under" in empty.output


def test_verify_ok_and_failure_exit_codes(out):
    checkpoint = out / "alpha_20260101-120000" / "checkpoints" / "checkpoint-20"
    result = runner.invoke(root, ["ckpt", "verify", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK ") and "optimizer.pt: loads with weights_only=True" in result.output
    (checkpoint / "optimizer.pt").unlink()
    failed = runner.invoke(root, ["ckpt", "verify", str(checkpoint)])
    assert failed.exit_code == 2
    assert "Traceback" not in failed.output
    assert "Error: checkpoint" in failed.output and "optimizer.pt is listed in the marker but missing" in failed.output
    whole_run = runner.invoke(root, ["ckpt", "verify", "alpha"])
    assert whole_run.exit_code == 2 and "1 of 3 checkpoints failed verification" in whole_run.output
    assert runner.invoke(root, ["ckpt", "verify", "latest"]).exit_code == 0


def test_prune_dry_run_then_for_real(out):
    dry = runner.invoke(root, ["ckpt", "prune", "--keep", "0", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "keeping step(s) 10, 30" in dry.output  # the best and the newest
    assert "would remove" in dry.output and "checkpoint-20" in dry.output and "Would free 1 folder(s)" in dry.output
    checkpoints = out / "alpha_20260101-120000" / "checkpoints"
    assert (checkpoints / "checkpoint-20").is_dir()
    done = runner.invoke(root, ["ckpt", "prune", "--keep", "0", "--experiment", "alpha"])
    assert done.exit_code == 0 and "Freed 1 folder(s)" in done.output
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-10", "checkpoint-30"]
    assert runner.invoke(root, ["ckpt", "prune"]).exit_code == 2  # --keep is required


def test_merge_and_export_from_latest(out, tmp_path):
    merged = runner.invoke(root, ["ckpt", "merge", "latest", "--out", str(tmp_path / "merged"), "--precision", "fp32"])
    assert merged.exit_code == 0, merged.output
    assert "Merged" in merged.output and (tmp_path / "merged" / "model.safetensors").is_file()
    again = runner.invoke(root, ["ckpt", "merge", "latest", "--out", str(tmp_path / "merged")])
    assert again.exit_code == 2 and "is not empty" in again.output and "--force" in again.output
    exported = runner.invoke(root, ["ckpt", "export", "alpha", "--out", str(tmp_path / "adapter")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file() and not (tmp_path / "adapter" / "optimizer.pt").exists()
    assert "step 30" in exported.output
