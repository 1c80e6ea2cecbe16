"""Benchmark documents: written atomically, read back equal, malformed files rejected with their path."""

import json

import pytest

from vlmft_cli.bench.results import BenchDocument, Entry, read_document, write_document
from vlmft_cli.errors import DataError


def test_round_trip(tmp_path):
    document = BenchDocument(bench="step", device={"device": "cpu"}, parameters={"stage": 1}, entries=[Entry({"model": "m"}, {"step_s": 0.5}, {"x": 1})], notes={"n": "t"})
    path = tmp_path / "sub" / "step.json"
    write_document(path, document)
    assert [p.name for p in path.parent.iterdir()] == ["step.json"]  # no temporary file left behind
    again = read_document(path)
    assert again.as_dict() == document.as_dict()
    assert json.loads(path.read_text())["schema"] == 1


def test_malformed_files_are_rejected(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_document(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not a JSON file"):
        read_document(bad)
    bad.write_text(json.dumps({"bench": "step"}))
    with pytest.raises(DataError, match="not a vlmft benchmark document"):
        read_document(bad)
    bad.write_text(json.dumps({"schema": 1, "bench": "step", "entries": [{"metrics": {}}]}))
    with pytest.raises(DataError, match="malformed"):
        read_document(bad)
