"""bench packing: the benchmark model (the base model's family at the mid size, frames of 256 tokens), and a
measured run as a benchmark document like the others' (`--json`, `--out`, `bench compare`)."""

import json
import statistics

import pytest
from typer.testing import CliRunner

from vlmft_cli.bench.compare import compare_files
from vlmft_cli.bench.packing import MID_SIZE, SPEED_TARGET, TOKEN_TARGET, measure_packing, scaled_config
from vlmft_cli.bench.results import read_document, write_document
from vlmft_cli.bench.tables import document_table
from vlmft_cli.cli.app import app
from vlmft_cli.errors import ConfigError, DataError

#: One layer each and 224-px frames: (224 / 14 × 0.5)² = 64 tokens per frame; quick on a CPU.
SMALL_SIZE = {"text_config": {"num_hidden_layers": 1}, "vision_config": {"num_hidden_layers": 1, "image_size": [224, 224]}}


def test_mid_size_config_from_the_tiny_model(vlmft_home):
    from vlmft_cli.backends import backend_for

    source = backend_for("tiny-internvl3").resolve("tiny-internvl3", vlmft_home)
    config = json.loads((vlmft_home / "models" / "tiny-internvl3" / "config.json").read_text())
    assert str(source).endswith("tiny-internvl3")
    scaled = scaled_config(config, MID_SIZE)
    assert scaled["text_config"]["num_hidden_layers"] == 4 and scaled["text_config"]["hidden_size"] == 256
    assert "layer_types" not in scaled["text_config"]  # rebuilt for the new depth
    assert scaled["vision_config"]["image_size"] == [448, 448]
    assert scaled["image_seq_length"] == 256  # (448 / 14 × 0.5)², as InternVL3's real frames
    assert config["text_config"]["num_hidden_layers"] == 2  # the base document is left alone
    with pytest.raises(ConfigError, match="needs a audio_config"):
        scaled_config(config, {"audio_config": {"hidden_size": 8}})


def test_a_measured_run_is_a_benchmark_document(vlmft_home, processed_data, tmp_path):
    document = measure_packing(processed_data, home=vlmft_home, steps=2, size=SMALL_SIZE)
    assert document.bench == "packing" and document.parameters["steps"] == 2 and document.device["device"] == "cpu"
    (entry,) = document.entries
    m, d = entry.metrics, entry.details
    assert entry.key == {"model": "tiny-internvl3", "global_batch_size": 8, "micro_batch_size": 2}
    assert d["tokens_per_frame"] == 64 + 2  # the processor follows the model's frame size (plus <img> and </img>)
    assert d["videos"] == 24 and d["qas"] > d["videos"]  # processed_data: 24 training videos, several QAs each
    assert 0 < m["tokens_packed"] < m["tokens_unpacked"]  # the frames go through once per video, not per QA
    assert m["token_ratio"] == pytest.approx(m["tokens_packed"] / m["tokens_unpacked"], abs=1e-4)
    assert len(d["packed_qas_per_s"]) == len(d["unpacked_qas_per_s"]) == 2  # the warm-up pair is not counted
    assert all(rate > 0 for rate in d["packed_qas_per_s"] + d["unpacked_qas_per_s"])
    assert m["median_packed_qas_per_s"] == pytest.approx(statistics.median(d["packed_qas_per_s"]), rel=1e-3)
    assert m["median_unpacked_qas_per_s"] == pytest.approx(statistics.median(d["unpacked_qas_per_s"]), rel=1e-3)
    assert m["speedup"] == pytest.approx(m["median_packed_qas_per_s"] / m["median_unpacked_qas_per_s"], rel=1e-2)
    assert d["targets"] == {"token_ratio": TOKEN_TARGET, "speedup": SPEED_TARGET}
    assert d["meets"] == {"token_ratio": m["token_ratio"] <= TOKEN_TARGET, "speedup": m["speedup"] >= SPEED_TARGET}

    path = tmp_path / "packing.json"
    write_document(path, document)
    assert read_document(path).as_dict() == json.loads(json.dumps(document.as_dict()))
    comparison = compare_files(path, path)
    assert {r.metric for r in comparison.ratios} == set(m) and all(r.ratio == 1.0 for r in comparison.ratios)
    table = document_table(document)
    assert table.rows[0][:2] == ["unpacked", f"{m['tokens_unpacked']:,}"] and table.rows[1][:2] == ["packed", f"{m['tokens_packed']:,}"]
    assert f"tokens packed/unpacked = {m['token_ratio']:.3f}" in table.lines[0] and f"{m['speedup']:.2f}×" in table.lines[0]


def test_cli_json_equals_the_written_document_and_the_table_reads(vlmft_home, processed_data, tmp_path, monkeypatch):
    import vlmft_cli.bench.packing as packing

    measure = packing.measure_packing
    monkeypatch.setattr(packing, "measure_packing", lambda *args, **kwargs: measure(*args, **kwargs, size=SMALL_SIZE))  # the CLI's model, smaller
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    out = tmp_path / "packing.json"
    result = CliRunner().invoke(app, ["bench", "packing", "--data", str(processed_data), "--steps", "1", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text()) and printed["bench"] == "packing"
    (entry,) = printed["entries"]
    assert entry["details"]["steps"] == 1 and len(entry["details"]["packed_qas_per_s"]) == 1
    assert 0 < entry["metrics"]["tokens_packed"] < entry["metrics"]["tokens_unpacked"] and entry["metrics"]["speedup"] > 0

    table = CliRunner().invoke(app, ["bench", "packing", "--data", str(processed_data), "--steps", "1"])
    assert table.exit_code == 0, table.output
    assert "tokens per epoch" in table.stdout and f"{entry['metrics']['tokens_unpacked']:,}" in table.stdout
    assert "tokens packed/unpacked =" in table.stdout and "QAs/s packed/unpacked =" in table.stdout


def test_cli_needs_a_processed_folder(tmp_path):
    result = CliRunner().invoke(app, ["bench", "packing", "--data", str(tmp_path), "--json", "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 2 and "stage1" in result.output and not (tmp_path / "p.json").exists()


def test_too_little_data_is_an_error(vlmft_home, processed_data):
    with pytest.raises(DataError, match="full steps"):
        measure_packing(processed_data, home=vlmft_home, steps=1, global_batch_size=10_000, size=SMALL_SIZE)
