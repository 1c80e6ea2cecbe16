"""`vlmft bench attention|step|data|compare` through the CLI: tables, --json, --out, one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from vlmft_cli.cli.app import app

runner = CliRunner()
TINY_ATTENTION = ["bench", "attention", "--seq-lens", "32,64", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--dtype", "fp32", "--repeats", "2", "--warmup", "1"]


def test_attention_json_and_file(tmp_path):
    out = tmp_path / "attention.json"
    result = runner.invoke(app, [*TINY_ATTENTION, "--backward", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["parameters"]["layout_source"] == "--heads/--kv-heads/--head-dim"
    assert {(e["key"]["backend"], e["key"]["seq_len"]) for e in printed["entries"]} == {("sdpa", 32), ("sdpa", 64), ("eager", 32), ("eager", 64)}
    assert all(e["metrics"]["forward_backward_ms_median"] > 0 for e in printed["entries"])
    assert {e["key"]["mask"] for e in printed["entries"]} == {"causal", "shared-prefix", "padded"}
    assert "flash-attn-sm121" in [u["name"] for u in printed["unavailable"]]  # flex too, on a CPU whose torch cannot train it


def test_attention_table_names_the_unavailable_backend():
    result = runner.invoke(app, TINY_ATTENTION)
    assert result.exit_code == 0, result.output
    assert "sdpa" in result.stdout and "eager" in result.stdout and "fwd ms (median)" in result.stdout
    assert "unavailable: flash-attn-sm121" in result.stdout


def test_step_table_and_json(tmp_path, vlmft_home, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    out = tmp_path / "step.json"
    result = runner.invoke(app, ["bench", "step", "--model", "tiny-internvl3", "--profile", "cpu", "--stage", "1", "--steps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.stdout and "MFU vs measured matmul" in result.stdout
    document = json.loads(out.read_text())
    assert document["bench"] == "step" and document["entries"][0]["metrics"]["tokens_per_s"] > 0


def test_data_json(processed_data, vlmft_home, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    args = ["bench", "data", "--data", str(processed_data), "--stage", "2", "--workers", "0", "--batches", "3", "--step-samples-per-s", "1.5", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["entries"][0]["metrics"]
    assert metrics["step_samples_per_s"] == 1.5 and metrics["ratio"] == pytest.approx(metrics["loader_samples_per_s"] / 1.5, rel=1e-2)


def test_compare_table_and_json(tmp_path):
    def write(name, value):
        document = {"schema": 1, "bench": "step", "device": {"device": "cpu"}, "parameters": {}, "entries": [{"key": {"model": "m", "stage": 1}, "metrics": {"step_s": value}}]}
        (tmp_path / name).write_text(json.dumps(document))
        return str(tmp_path / name)

    a, b = write("a.json", 2.0), write("b.json", 0.5)
    result = runner.invoke(app, ["bench", "compare", a, b, "--json"])
    assert result.exit_code == 0, result.output
    (ratio,) = json.loads(result.stdout)["ratios"]
    assert (ratio["metric"], ratio["a"], ratio["b"], ratio["ratio"]) == ("step_s", 2.0, 0.5, 0.25)
    table = runner.invoke(app, ["bench", "compare", a, b])
    assert table.exit_code == 0 and "0.25" in table.stdout and "B/A" in table.stdout


def test_errors_are_one_line():
    result = runner.invoke(app, ["bench", "step", "--layers", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "add --random-init" in result.output
    result = runner.invoke(app, ["bench", "attention", "--seq-lens", "12,x"])
    assert result.exit_code == 2 and "--seq-lens takes comma-separated integers" in result.output
