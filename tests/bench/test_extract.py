"""bench extract: both measurements run on the same frames, the figures are consistent (not timed), and the
result is a benchmark document like the others' (`--json`, `--out`, `bench compare`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vlmft_cli.bench.compare import compare_files
from vlmft_cli.bench.extract import TARGET_RATIO, measure_extract
from vlmft_cli.bench.results import read_document, write_document
from vlmft_cli.bench.tables import document_table
from vlmft_cli.cli.app import app

runner = CliRunner()


def test_benchmark_measures_extract_and_the_bare_loop_on_the_same_frames(synth_source, tmp_path):
    document = measure_extract(str(synth_source), workers=1, size=32, limit=6, repeat=2)
    assert document.bench == "extract" and document.parameters["workers"] == 1 and document.parameters["repeat"] == 2
    assert "torch" not in document.device and document.device["cpu_cores"] >= 1  # the host, torch never imported
    (entry,) = document.entries
    m, d = entry.metrics, entry.details
    assert entry.key == {"size": 32, "quality": 85}
    assert (d["records"], d["frames"]) == (10, 160)  # 6 train + 4 val videos of 16 frames
    assert m["extract_s"] > 0 and m["loop_s"] > 0 and m["extract_cpu_s"] > 0 and m["loop_cpu_s"] > 0
    assert m["extract_frames_per_s"] == pytest.approx(d["frames"] / m["extract_s"], rel=0.01)
    assert m["extract_records_per_s"] == pytest.approx(d["records"] / m["extract_s"], rel=0.01)
    assert m["loop_frames_per_s"] == pytest.approx(d["frames"] / m["loop_s"], rel=0.01)
    assert m["ratio"] == pytest.approx(m["extract_frames_per_s"] / m["loop_frames_per_s"], abs=0.01)
    assert m["cpu_ratio"] == pytest.approx(m["loop_cpu_s"] / m["extract_cpu_s"], abs=0.01)
    assert d["target_ratio"] == TARGET_RATIO and d["meets_target"] == (m["ratio"] >= TARGET_RATIO)
    assert 0 < m["peak_rss_worker_mib"] < m["peak_rss_total_mib"] and m["peak_rss_main_mib"] > 0

    path = tmp_path / "extract.json"
    write_document(path, document)
    assert read_document(path).as_dict() == json.loads(json.dumps(document.as_dict()))
    comparison = compare_files(path, path)
    assert {r.metric for r in comparison.ratios} == set(m) and all(r.ratio == 1.0 for r in comparison.ratios)
    table = document_table(document)
    assert [row[0] for row in table.rows] == ["extract", "bare loop"]
    assert f"extract / loop = {m['ratio']:.2f}" in table.lines[0] and f"all {m['peak_rss_total_mib']:.4g} MiB" in table.lines[1]


def test_cli_json_equals_the_written_document_and_the_table_says_where(synth_source, tmp_path):
    base = ["bench", "extract", "--source", str(synth_source), "--workers", "1", "--size", "32", "--limit", "2", "--repeat", "1"]
    out = tmp_path / "extract.json"
    result = runner.invoke(app, [*base, "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["schema"] == 1 and printed["bench"] == "extract"
    (entry,) = printed["entries"]
    assert entry["details"]["records"] == 4 and entry["details"]["frames"] == 64  # 2 train + 2 val videos
    m = entry["metrics"]
    # The printed figures agree with one another: throughput = 64 frames / the time printed beside it, and
    # the ratio is extract frames/s over bare-loop frames/s (= loop time / extract time, the same frames).
    assert m["extract_frames_per_s"] == pytest.approx(64 / m["extract_s"], rel=0.01)
    assert m["loop_frames_per_s"] == pytest.approx(64 / m["loop_s"], rel=0.01)
    assert m["ratio"] == pytest.approx(m["extract_frames_per_s"] / m["loop_frames_per_s"], abs=0.01)
    assert m["ratio"] == pytest.approx(m["loop_s"] / m["extract_s"], abs=0.01)
    assert m["cpu_ratio"] == pytest.approx(m["loop_cpu_s"] / m["extract_cpu_s"], abs=0.01)
    assert entry["details"]["meets_target"] == (m["ratio"] >= entry["details"]["target_ratio"])

    table = runner.invoke(app, [*base, "--out", str(tmp_path / "again.json")])
    assert table.exit_code == 0, table.output
    assert "bare loop" in table.stdout and "extract / loop =" in table.stdout and f"written: {tmp_path / 'again.json'}" in table.stdout
    assert read_document(tmp_path / "again.json").entries[0].details["frames"] == 64
