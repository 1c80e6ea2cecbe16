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
from vlmft_cli.evaluate.metrics import scored_group
from vlmft_cli.evaluate.scoring import ScoredAnswer, score_answer


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
    assert columns == ["metric", "stage2-only_1@6 s1-val", "stage2_1@6 s1-val", "Δ% stage2_1@6 s1-val", "sig. stage2_1@6 s1-val"]
    assert ["overall loss", "0.5000", "0.2600", "-48.0%", "-"] in table  # no per-QA losses: no test
    markdown = comparison_markdown(comparison)
    assert "| overall loss | 0.5000 | 0.2600 | -48.0% | - |" in markdown and str(base) in markdown
    document = comparison_json(comparison)
    assert document["rows"][0] == {
        "group": "overall", "metric": "loss", "higher_is_better": False, "values": [0.5, 0.26], "delta_pct": [None, pytest.approx(-48.0)],
        "significant": [None, None], "significance_test": [None, None], "difference_ci95": [None, None],
    }  # fmt: skip


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


def scored_eval(folder, run, answers, *, ids=None, score_format="clean", predictions=True):
    """An evaluation of yes/no success QAs (all references "yes"): metrics.json from the real scoring,
    and its predictions.jsonl unless `predictions` is False."""
    scored = [ScoredAnswer(answer, "yes", score_answer(answer, "yes", score_format)) for answer in answers]
    ids = ids or [f"v{i}" for i in range(len(answers))]
    document = metrics(run, 6, 0.5)
    document["generation"] = {"score_format": score_format}
    document["overall"] = {"qas": len(answers), "loss": 0.5, **scored_group(scored)}
    document["per_task"] = {"success": {"qas": len(answers), **scored_group(scored)}}
    path = write_eval(folder, document)
    if predictions:
        lines = [
            {"id": qa_id, "task": "success", "task_type": "success", "subtype": "True", "turn": 1, "reference": "yes", "prediction": answer.prediction, "scores": answer.scores.as_dict()}
            for qa_id, answer in zip(ids, scored, strict=True)
        ]
        (folder / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def row_of(comparison, label):
    return next(row for row in comparison.rows if row.label == label)


def test_significance_paired_on_the_same_questions_else_by_intervals(tmp_path):
    # 40 yes/no QAs: the baseline answers 20 right; "better" 30 (the same 20 and 10 more); "slightly" 22.
    base = scored_eval(tmp_path / "base", "base_1", ["yes"] * 20 + ["no"] * 20)
    better = scored_eval(tmp_path / "better", "better_1", ["yes"] * 30 + ["no"] * 10)
    slightly = scored_eval(tmp_path / "slightly", "slightly_1", ["yes"] * 22 + ["no"] * 18)
    comparison = compare_evaluations([str(base), str(better), str(slightly)], tmp_path)
    accuracy = row_of(comparison, "success yes/no accuracy")
    assert accuracy.values == [0.5, 0.75, 0.55]
    # Paired: the difference 0.25 over 10 discordant QAs of 40 has an interval of about 0.25 ± 0.134.
    assert accuracy.significance[1].method == "paired" and accuracy.significance[1].significant is True
    low, high = accuracy.significance[1].difference_ci95
    assert low == pytest.approx(0.25 - 0.134, abs=0.03) and high == pytest.approx(0.25 + 0.134, abs=0.03)
    # 2 more right of 40: the interval of the difference reaches 0 (both can be left out of a resample).
    assert accuracy.significance[2].method == "paired" and accuracy.significance[2].significant is False
    # The two evaluations' own intervals overlap (0.5 ± 0.155 and 0.75 ± 0.134): only the paired test sees it.
    base_ci = json.loads(base.read_text())["per_task"]["success"]["ci95"]["yes_no_accuracy"]
    better_ci = json.loads(better.read_text())["per_task"]["success"]["ci95"]["yes_no_accuracy"]
    assert base_ci[1] > better_ci[0]
    assert row_of(comparison, "overall loss").significance == [None, None, None]
    columns, table = comparison_table(comparison)
    cells = next(r for r in table if r[0] == "success yes/no accuracy")
    assert cells[columns.index("sig. better_1@6 s1-val")] == "yes (paired)" and cells[columns.index("sig. slightly_1@6 s1-val")] == "no (paired)"
    assert "paired bootstrap over the same QAs" in comparison_markdown(comparison)
    document = comparison_json(comparison)
    entry = next(r for r in document["rows"] if r["group"] == "success" and r["metric"] == "yes_no_accuracy")
    assert entry["significant"] == [None, True, False] and entry["significance_test"] == [None, "paired", "paired"]


def test_other_questions_or_no_predictions_fall_back_to_non_overlapping_intervals(tmp_path):
    base = scored_eval(tmp_path / "base", "base_1", ["yes"] * 10 + ["no"] * 30)
    # Other QAs (other ids): not paired. 0.25 [≈0.12, 0.38] against 0.9 [≈0.8, 1.0]: apart.
    elsewhere = scored_eval(tmp_path / "elsewhere", "elsewhere_1", ["yes"] * 36 + ["no"] * 4, ids=[f"w{i}" for i in range(40)])
    # No predictions.jsonl, a small change: the intervals overlap.
    bare = scored_eval(tmp_path / "bare", "bare_1", ["yes"] * 12 + ["no"] * 28, predictions=False)
    comparison = compare_evaluations([str(base), str(elsewhere), str(bare)], tmp_path)
    accuracy = row_of(comparison, "overall yes/no accuracy")
    assert [test.method for test in accuracy.significance[1:]] == ["intervals", "intervals"]
    assert accuracy.significance[1].significant is True and accuracy.significance[2].significant is False
    assert accuracy.significance[1].difference_ci95 is None


def test_bleu_across_score_formats_is_not_tested_and_warned_about(tmp_path):
    clean = scored_eval(tmp_path / "clean", "clean_1", ["yes"] * 20 + ["no"] * 20)
    official = scored_eval(tmp_path / "official", "official_1", ["yes"] * 20 + ["no"] * 20, score_format="official")
    comparison = compare_evaluations([str(clean), str(official)], tmp_path)
    assert any("official format" in warning and "not comparable" in warning for warning in comparison.warnings)
    bleu = row_of(comparison, "success sentence BLEU-4")
    assert bleu.values[0] == pytest.approx(50.0) and bleu.values[1] > 50.0  # "A: no" still matches "A:"
    assert bleu.significance == [None, None]
    # Accuracy compares the answers alone: the same in both formats, tested (paired), not significant.
    accuracy = row_of(comparison, "success yes/no accuracy")
    assert accuracy.values == [0.5, 0.5] and accuracy.significance[1].method == "paired" and not accuracy.significance[1].significant
