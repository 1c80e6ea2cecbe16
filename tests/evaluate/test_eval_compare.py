"""`eval compare`: finding evaluations, Δ% against the first, warnings when the data differ."""

import json
import os

import pytest

from vlmft_cli.errors import CheckpointError, DataError, VlmftError
from vlmft_cli.evaluate.compare import (
    compare,
    compare_evaluations,
    comparison_json,
    comparison_markdown,
    comparison_table,
    delta_pct,
    find_metrics,
    load_metrics,
)


def metrics(run, step, loss, bleu4=None, stage=1, tasks=None, limit=None):
    overall = {"qas": 10, "loss": loss, "perplexity": 2.0 * loss}
    if bleu4 is not None:
        overall.update(bleu4=bleu4, yes_no_accuracy=0.5)
    return {
        "model": {"label": f"{run}/checkpoint-{step}", "run": run, "step": step},
        "eval_set": {"stage": stage, "split": "val", "file": f"d/stage{stage}/val.jsonl", "limit": limit, "examples": 10},
        "generation": None,
        "overall": overall,
        "per_task": tasks or {},
    }


def write_eval(folder, document, mtime=None):
    folder.mkdir(parents=True)
    path = folder / "metrics.json"
    path.write_text(json.dumps(document))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_delta_pct():
    assert delta_pct(0.5, 1.0) == -50.0 and delta_pct(30.0, 20.0) == 50.0 and delta_pct(-1.0, -2.0) == 50.0
    assert delta_pct(None, 1.0) is None and delta_pct(1.0, None) is None and delta_pct(1.0, 0.0) is None


def test_find_metrics_by_file_eval_folder_run_folder_and_run_name(tmp_path):
    run = tmp_path / "stage2_20250101-000000"
    (run / "run.json").parent.mkdir()
    (run / "run.json").write_text(json.dumps({"stage": 2, "created": "2025-01-01T00:00:00Z"}))
    older = write_eval(run / "eval" / "stage1-val-step4", metrics("stage2_20250101-000000", 4, 1.0), mtime=1_000_000)
    newer = write_eval(run / "eval" / "stage1-val-step6", metrics("stage2_20250101-000000", 6, 0.8), mtime=2_000_000)
    assert find_metrics(str(older), tmp_path) == older
    assert find_metrics(str(older.parent), tmp_path) == older
    assert find_metrics(str(run), tmp_path) == newer
    assert find_metrics("stage2", tmp_path) == newer  # an experiment name: its newest run
    with pytest.raises(CheckpointError, match="holds no evaluation"):
        find_metrics(str(tmp_path), tmp_path)
    with pytest.raises(CheckpointError):
        find_metrics("nothing-like-this", tmp_path)
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a metrics.json"):
        load_metrics(str(tmp_path / "junk.json"), tmp_path)


def test_curriculum_against_stage2_only(tmp_path):
    base = write_eval(tmp_path / "only" / "eval" / "s1", metrics("stage2-only_1", 6, 0.5, bleu4=20.0, tasks={"success": {"loss": 0.4}}))
    curriculum = write_eval(tmp_path / "curr" / "eval" / "s1", metrics("stage2_1", 6, 0.26, bleu4=30.0, tasks={"success": {"loss": 0.3}, "planning": {"loss": 1.0}}))
    comparison = compare_evaluations([str(base), str(curriculum)], tmp_path)
    assert comparison.labels == ["stage2-only_1@6 s1-val", "stage2_1@6 s1-val"] and comparison.warnings == []
    rows = {row.label: row for row in comparison.rows}
    assert rows["overall loss"].values == [0.5, 0.26] and rows["overall loss"].deltas[1] == pytest.approx(-48.0)
    assert rows["overall BLEU-4"].deltas == [None, pytest.approx(50.0)] and rows["overall BLEU-4"].higher_is_better
    assert rows["success loss"].deltas[1] == pytest.approx(-25.0)
    assert rows["planning loss"].values == [None, 1.0] and rows["planning loss"].deltas == [None, None]
    assert "overall BLEU-1" not in rows  # no evaluation has it
    columns, table = comparison_table(comparison)
    assert columns == ["metric", "stage2-only_1@6 s1-val", "stage2_1@6 s1-val", "Δ% stage2_1@6 s1-val"]
    assert ["overall loss", "0.5000", "0.2600", "-48.0%"] in table
    markdown = comparison_markdown(comparison)
    assert "| overall loss | 0.5000 | 0.2600 | -48.0% |" in markdown and str(base) in markdown
    document = comparison_json(comparison)
    assert document["rows"][0] == {"group": "overall", "metric": "loss", "higher_is_better": False, "values": [0.5, 0.26], "delta_pct": [None, pytest.approx(-48.0)]}


def test_different_data_is_compared_with_a_warning_and_labels_stay_unique(tmp_path):
    a = write_eval(tmp_path / "a", metrics("run_1", 6, 1.0))
    b = write_eval(tmp_path / "b", metrics("run_1", 6, 1.0, stage=2, limit=5))
    comparison = compare([load_metrics(str(a), tmp_path), load_metrics(str(b), tmp_path)])
    assert comparison.labels == ["run_1@6 s1-val", "run_1@6 s2-val"]
    assert len(comparison.warnings) == 1 and "stage 1 vs 2" in comparison.warnings[0] and "limit None vs 5" in comparison.warnings[0]
    same = compare([load_metrics(str(a), tmp_path)] * 2)
    assert same.labels == ["run_1@6 s1-val", "run_1@6 s1-val #2"]
    with pytest.raises(VlmftError, match="at least two"):
        compare([load_metrics(str(a), tmp_path)])
