"""End-to-end evaluation of a tiny trained checkpoint and of the base model, through the library."""

import csv
import json
import math

import pytest

from vlmft_cli.errors import CheckpointError, ConfigError
from vlmft_cli.evaluate.runner import EvalRequest, evaluate_checkpoint
from vlmft_cli.reporting import RecordingReporter


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def qa_count(data, stage):
    lines = jsonl(data / f"stage{stage}" / "val.jsonl")
    return sum(len(line["conversations"]) // 2 for line in lines)


def training_eval_loss(run_dir, step):
    with (run_dir / "logs" / "eval_metrics.csv").open() as handle:
        return next(float(row["loss"]) for row in csv.DictReader(handle) if int(row["step"]) == step)


@pytest.fixture(scope="module")
def loss_only(stage1_run, processed_data, vlmft_home):
    out, result = stage1_run
    reporter = RecordingReporter()
    report = evaluate_checkpoint(EvalRequest(data=processed_data, checkpoint=str(result.run_dir), stage=1, runs_dir=out, home=vlmft_home), reporter)
    return report, reporter


def test_loss_only_eval_matches_training_time_eval_and_writes_its_files(loss_only, stage1_run, processed_data):
    report, reporter = loss_only
    _, result = stage1_run
    assert report.output_dir == result.run_dir / "eval" / "stage1-val-step2"
    assert sorted(p.name for p in report.output_dir.iterdir()) == ["metrics.json", "metrics.md"]
    metrics = json.loads((report.output_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(report.metrics))
    overall = metrics["overall"]
    # The adapter is loaded right and the inputs match training: the same loss the trainer measured at step 2.
    assert overall["loss"] == pytest.approx(training_eval_loss(result.run_dir, 2), rel=1e-5)
    assert overall["perplexity"] == pytest.approx(math.exp(overall["loss"]))
    assert overall["qas"] == qa_count(processed_data, 1) == sum(g["qas"] for g in metrics["per_task"].values())
    assert {"affordance", "success"} <= set(metrics["per_task"]) and "per_turn" not in metrics
    assert metrics["generation"] is None and "bleu4" not in overall
    assert metrics["model"]["checkpoint"] == str(result.last_checkpoint) and metrics["model"]["step"] == 2
    assert metrics["eval_set"]["max_frames"] == 4 and metrics["eval_set"]["max_length"] == 2048
    assert any(task.description == "eval" and task.completed == metrics["eval_set"]["examples"] for task in reporter.tasks)
    markdown = (report.output_dir / "metrics.md").read_text()
    assert "| group | QAs | loss | ppl |" in markdown and f"| overall | {overall['qas']} | {overall['loss']:.4f} |" in markdown


@pytest.fixture(scope="module")
def generated(stage1_run, processed_data, vlmft_home, tmp_path_factory):
    out, result = stage1_run
    reporter = RecordingReporter()
    folder = tmp_path_factory.mktemp("stage2-eval")
    request = EvalRequest(data=processed_data, checkpoint="latest", stage=2, generate=True, batch_size=3, max_new_tokens=6, out=folder, runs_dir=out, home=vlmft_home)
    return evaluate_checkpoint(request, reporter), reporter


def test_stage2_generation_scores_every_turn_with_consistent_files(generated, processed_data):
    report, reporter = generated
    metrics = json.loads((report.output_dir / "metrics.json").read_text())
    predictions = jsonl(report.output_dir / "predictions.jsonl")
    assert len(predictions) == report.predictions == metrics["overall"]["qas"] == qa_count(processed_data, 2)
    assert any("stage-2 data is evaluated with that stage's defaults max_frames 10" in m for m in reporter.infos)
    assert metrics["eval_set"]["max_frames"] == 10 and metrics["generation"]["batch_size"] == 3
    # Lines follow the data: conversation by conversation, turn by turn, with the data's references.
    source = jsonl(processed_data / "stage2" / "val.jsonl")
    expected = [(line["id"], k + 1, turn["value"]) for line in source for k, turn in enumerate(line["conversations"][1::2])]
    assert [(p["id"], p["turn"], p["reference"]) for p in predictions] == expected
    first = predictions[0]
    assert set(first) == {"id", "task_type", "subtype", "format", "turn", "question", "reference", "prediction", "scores"}
    assert set(first["scores"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "exact_match", "yes_no_correct"}
    # Group figures are the predictions' own: counts per task and turn, mean sentence BLEU, yes/no accuracy.
    for task, group in metrics["per_task"].items():
        mine = [p for p in predictions if p["task_type"] == task]
        assert group["qas"] == len(mine)
        assert group["sentence_bleu4"] == pytest.approx(sum(p["scores"]["bleu4"] for p in mine) / len(mine))
    assert sum(g["qas"] for g in metrics["per_turn"].values()) == len(predictions) and "1" in metrics["per_turn"]
    yes_no = [p for p in predictions if p["reference"].lower() in ("yes", "no")]
    assert metrics["overall"]["yes_no_count"] == len(yes_no) > 0
    assert metrics["overall"]["yes_no_accuracy"] == pytest.approx(sum(p["scores"]["yes_no_correct"] for p in yes_no) / len(yes_no))
    assert all(0 <= metrics["overall"][f"bleu{n}"] <= 100 for n in (1, 2, 3, 4))
    assert [t.description for t in reporter.tasks] == ["eval", "generate"] and reporter.tasks[1].completed == len(predictions)
    assert "| BLEU1 | BLEU2 | BLEU3 | BLEU4 | sBLEU4 | EM | yes/no (n) |" in (report.output_dir / "metrics.md").read_text()


def test_zero_shot_base_model_and_stale_predictions(stage1_run, processed_data, vlmft_home, loss_only):
    out, _ = stage1_run
    request = EvalRequest(data=processed_data, model="tiny-internvl3", stage=1, limit=3, generate=True, max_new_tokens=4, runs_dir=out, home=vlmft_home)
    report = evaluate_checkpoint(request)
    assert report.output_dir == out / "zero-shot_tiny-internvl3" / "eval" / "stage1-val-step0-limit3"
    metrics = report.metrics
    assert metrics["model"]["checkpoint"] is None and metrics["model"]["label"] == "tiny-internvl3 (zero-shot)"
    assert metrics["eval_set"]["examples"] == metrics["overall"]["qas"] == report.predictions == 3
    # The untrained base model scores another loss than the trained adapter.
    assert metrics["overall"]["loss"] != pytest.approx(loss_only[0].metrics["overall"]["loss"], rel=1e-3)
    # A loss-only evaluation into the same folder replaces it whole, saying so.
    reporter = RecordingReporter()
    again = evaluate_checkpoint(EvalRequest(data=processed_data, checkpoint="none", stage=1, limit=3, runs_dir=out, home=vlmft_home), reporter)
    assert again.output_dir == report.output_dir and not (report.output_dir / "predictions.jsonl").exists()
    assert any("had generation results" in w for w in reporter.warnings)


def test_requests_that_cannot_work_say_why(stage1_run, processed_data, vlmft_home, tmp_path):
    out, result = stage1_run
    with pytest.raises(ConfigError, match="adapter for 'tiny-internvl3', not 'other-internvl'"):
        evaluate_checkpoint(EvalRequest(data=processed_data, checkpoint=str(result.last_checkpoint), model="other-internvl", runs_dir=out, home=vlmft_home))
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        evaluate_checkpoint(EvalRequest(data=processed_data, checkpoint="latest", runs_dir=tmp_path, home=vlmft_home))
    with pytest.raises(ConfigError, match="no data folder"):
        evaluate_checkpoint(EvalRequest(model="tiny-internvl3", runs_dir=tmp_path, home=vlmft_home))
    with pytest.raises(ConfigError, match="split must be train or val"):
        evaluate_checkpoint(EvalRequest(data=processed_data, split="test", runs_dir=tmp_path, home=vlmft_home))
