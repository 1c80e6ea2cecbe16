"""`vlmft data` end to end, as a user runs them: synth → inspect → extract → verify (`vlmft bench extract`:
tests/bench/test_extract.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vlmft_cli.cli.app import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_every_data_command_has_help_with_an_example():
    result = _invoke("data", "--help")
    assert result.exit_code == 0
    for command in ("download", "inspect", "synth", "extract", "verify", "import"):
        assert command in result.output
        help_text = _invoke("data", command, "--help")
        assert help_text.exit_code == 0 and "Example: vlmft data" in help_text.output
    assert "Example: vlmft bench extract" in _invoke("bench", "extract", "--help").output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """synth → extract, through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    synth = _invoke(
        "data", "synth", "--out", root / "robovqa", "--videos", 6, "--val", 2, "--seed", 3, "--frame-size", 48
    )
    assert synth.exit_code == 0, synth.output
    extract = _invoke(
        "data",
        "extract",
        "--source",
        root / "robovqa",
        "--out",
        root / "processed",
        "--size",
        32,
        "--workers",
        1,
        "--json",
    )
    assert extract.exit_code == 0, extract.output
    return root, synth, json.loads(extract.stdout)


def test_synth_extract_verify_inspect(pipeline):
    root, synth, extracted = pipeline
    assert "Synthetic RoboVQA" in synth.output and "Next: vlmft data extract" in synth.output
    assert (
        extracted["problems"] == 0
        and extracted["splits"]["train"]["videos"] == 6
        and extracted["splits"]["val"]["videos"] == 2
    )

    verify = _invoke("data", "verify", root / "processed", "--full", "--workers", 1)
    assert verify.exit_code == 0, verify.output
    assert "OK" in verify.output and "stage1/train" in verify.output

    inspect = _invoke("data", "inspect", root / "robovqa", "--records", 2, "--json")
    assert inspect.exit_code == 0, inspect.output
    report = json.loads(inspect.stdout)
    assert report["records"] == 4 and report["frames_per_record"] == {"16": 4} and report["examples"]
    table = _invoke("data", "inspect", root / "robovqa", "--records", 2)
    assert "Schema" in table.output and "unique_id" in table.output and "Example QAs" in table.output


def test_rerun_prints_the_summary_and_does_nothing(pipeline):
    root, _, _ = pipeline
    again = _invoke(
        "data", "extract", "--source", root / "robovqa", "--out", root / "processed", "--size", 32, "--workers", 1
    )
    assert again.exit_code == 0, again.output
    assert "already complete" in again.output and "QAs per task type" in again.output


def test_verify_fails_with_a_report(pipeline, tmp_path):
    root, _, _ = pipeline
    (tmp_path / "stage1").mkdir()
    result = _invoke("data", "verify", tmp_path)
    assert result.exit_code == 1
    assert "metadata.json is missing" in result.output and "FAILED" in result.output


def test_strict_extract_exits_1_on_bad_input_and_the_summary_counts_it(pipeline, tmp_path):
    root, _, _ = pipeline
    shard = root / "robovqa" / "tfrecord" / "val" / "val-00000-of-00001"
    damaged = tmp_path / "src" / "val"
    damaged.mkdir(parents=True)
    (damaged / shard.name).write_bytes(shard.read_bytes()[:-9])
    result = _invoke(
        "data",
        "extract",
        "--source",
        tmp_path / "src",
        "--out",
        tmp_path / "out",
        "--size",
        32,
        "--workers",
        1,
        "--strict",
    )
    assert result.exit_code == 1
    assert "damaged shard val-00000-of-00001" in result.output and "--strict: 1 problems" in result.output


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    result = _invoke("data", "extract", "--source", tmp_path / "nothing", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no shards under" in result.output


def test_download_from_a_local_bucket(pipeline, tmp_path):
    root, _, _ = pipeline
    result = _invoke(
        "data", "download", "--source", root / "robovqa", "--dest", tmp_path / "copy", "--workers", 2, "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["downloaded"] == 2
    assert sorted(p.name for p in (tmp_path / "copy" / "train").iterdir()) == sorted(
        p.name for p in (root / "robovqa" / "tfrecord" / "train").iterdir()
    )


def _sharegpt_source(root):
    from PIL import Image

    records = []
    for v in range(3):
        folder = root / "clips" / f"c{v}"
        folder.mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (24, 24), (v * 80, i * 50, 0)).save(folder / f"{i}.jpg")
        records.append(
            {
                "conversations": [{"from": "human", "value": "<video>What now?"}, {"from": "gpt", "value": f"go {v}"}],
                "videos": [f"clips/c{v}"],
            }
        )
    records.append({"conversations": [{"from": "human", "value": "<video>q"}], "videos": ["clips/c0"]})
    source = root / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    return source


def test_import_prints_a_summary_and_json_and_verify_passes(tmp_path):
    source = _sharegpt_source(tmp_path / "src")
    args = ("data", "import", "--format", "sharegpt", source, "--size", 16, "--workers", 1, "--val-ratio", 0.34)
    table = _invoke(*args, "--out", tmp_path / "a")
    assert table.exit_code == 0, table.output
    assert "Imported into" in table.output and "split drawn per video (seed 0)" in table.output
    assert f"{source}:4: turns must alternate user/assistant and end with an answer" in table.output
    as_json = _invoke(*args, "--out", tmp_path / "b", "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["problems"] == 1 and report["skipped_samples"][0]["line"] == 4
    assert {split: s["videos"] for split, s in report["splits"].items()} == {"train": 2, "val": 1}
    verify = _invoke("data", "verify", tmp_path / "b", "--full", "--workers", 1)
    assert verify.exit_code == 0 and "OK" in verify.output
    strict = _invoke(*args, "--out", tmp_path / "c", "--strict")
    assert strict.exit_code == 1 and "--strict: 1 samples skipped" in strict.output


def test_import_errors_are_one_line_with_exit_code_2(tmp_path):
    source = _sharegpt_source(tmp_path / "src")
    remote = tmp_path / "src" / "dataset_info.json"
    remote.write_text(json.dumps({"hub": {"hf_hub_url": "a/b"}, "pairs": {"file_name": "data.jsonl", "ranking": True}}))
    cases = [
        (("--format", "llamafactory", source), "--format llamafactory needs --dataset NAME"),
        (("--format", "sharegpt", tmp_path / "none.jsonl"), "none.jsonl is not a file"),
        (("--format", "llamafactory", source, "--dataset", "x"), "not a dataset_info.json"),
        (("--format", "llamafactory", remote, "--dataset", "hub"), "has no file_name (hf_hub_url names a remote"),
        (("--format", "llamafactory", remote, "--dataset", "pairs"), "is a preference dataset"),
    ]
    for args, message in cases:
        result = _invoke("data", "import", *args, "--out", tmp_path / "out")
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "out").exists()
