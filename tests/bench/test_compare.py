"""bench compare: ratios B/A of matching entries, from two hand-written files."""

import json

import pytest

from vlmft_cli.bench.compare import compare_files
from vlmft_cli.errors import DataError


def _write(path, bench, entries):
    path.write_text(json.dumps({"schema": 1, "bench": bench, "device": {"device": "cpu"}, "parameters": {}, "entries": entries}))
    return path


def _entry(backend, seq_len, **metrics):
    return {"key": {"backend": backend, "seq_len": seq_len}, "metrics": metrics}


def test_ratios_of_matching_entries(tmp_path):
    a = _write(tmp_path / "a.json", "attention", [
        _entry("sdpa", 512, forward_ms_median=2.0, peak_memory_mib=10.0, note_only_in_a=1.0),
        _entry("eager", 512, forward_ms_median=8.0, peak_memory_mib=0),
        _entry("sdpa", 1024, forward_ms_median=5.0),
    ])  # fmt: skip
    b = _write(tmp_path / "b.json", "attention", [
        _entry("eager", 512, forward_ms_median=4.0, peak_memory_mib=3.0),
        _entry("sdpa", 512, forward_ms_median=3.0, peak_memory_mib=None),
        _entry("flash", 512, forward_ms_median=1.0),
    ])  # fmt: skip
    comparison = compare_files(a, b)
    found = {(r.key["backend"], r.key["seq_len"], r.metric): (r.a, r.b, r.ratio) for r in comparison.ratios}
    assert found == {
        ("sdpa", 512, "forward_ms_median"): (2.0, 3.0, 1.5),
        ("eager", 512, "forward_ms_median"): (8.0, 4.0, 0.5),
        ("eager", 512, "peak_memory_mib"): (0, 3.0, None),  # no ratio to a zero
    }
    assert comparison.only_in_a == [{"backend": "sdpa", "seq_len": 1024}]
    assert comparison.only_in_b == [{"backend": "flash", "seq_len": 512}]
    assert comparison.as_dict()["ratios"][0]["metric"] == "forward_ms_median"


def test_different_benchmarks_do_not_compare(tmp_path):
    a = _write(tmp_path / "a.json", "attention", [])
    b = _write(tmp_path / "b.json", "step", [])
    with pytest.raises(DataError, match="cannot compare a attention benchmark"):
        compare_files(a, b)
