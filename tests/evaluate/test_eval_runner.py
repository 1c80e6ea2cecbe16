"""End-to-end evaluation of a tiny trained checkpoint and of the base model, through the library."""

import csv
import json
import math

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU

from vlmft_cli.errors import CheckpointError, ConfigError
from vlmft_cli.evaluate.metrics import PAPER_TASKS
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
    # Tasks are full tags (affordance is two tasks), each named as the paper does; their losses are their
    # own QAs': token-weighted, they add up to the overall loss.
    assert {"affordance:discriminative", "affordance:generative:positive", "success"} <= set(metrics["per_task"]) <= set(PAPER_TASKS)
    assert "affordance" not in metrics["per_task"] and "per_turn" not in metrics
    assert all(g["paper_task"] == PAPER_TASKS[task].name for task, g in metrics["per_task"].items())
    assert sum(g["tokens"] for g in metrics["per_task"].values()) == overall["tokens"]
    assert sum(g["loss"] * g["tokens"] for g in metrics["per_task"].values()) == pytest.approx(overall["loss"] * overall["tokens"], rel=1e-6)
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
    assert set(first) == {"id", "task", "task_type", "subtype", "format", "turn", "question", "reference", "prediction", "scores"}
    assert set(first["scores"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "exact_match", "yes_no_correct", "ngrams"}
    assert metrics["generation"]["score_format"] == "clean"
    # Group figures are the predictions' own: counts per task (type and subtype without the True/False
    # label) and turn, mean sentence BLEU (sacrebleu on the texts), corpus BLEU, yes/no accuracy.
    for task, group in metrics["per_task"].items():
        mine = [p for p in predictions if ":".join([p["task_type"], *[f for f in (p["subtype"] or "").split(":") if f and f not in ("True", "False")]]) == task]
        assert group["qas"] == len(mine) == group["answers"] and all(p["task"] == task for p in mine)
        assert group["sentence_bleu4"] == pytest.approx(sum(sacrebleu.sentence_bleu(p["prediction"], [p["reference"]]).score for p in mine) / len(mine))
        assert group["bleu2"] == pytest.approx(BLEU(max_ngram_order=2).corpus_score([p["prediction"] for p in mine], [[p["reference"] for p in mine]]).score)
        assert group["headline"] == ("yes_no_accuracy" if PAPER_TASKS[task].binary else "sentence_bleu4")
        low, high = group["ci95"]["sentence_bleu4"]
        assert low <= group["sentence_bleu4"] <= high
    assert sum(g["qas"] for g in metrics["per_turn"].values()) == len(predictions) and "1" in metrics["per_turn"]
    yes_no = [p for p in predictions if p["reference"].lower() in ("yes", "no")]
    assert metrics["overall"]["yes_no_count"] == len(yes_no) > 0
    assert metrics["overall"]["yes_no_accuracy"] == pytest.approx(sum(p["scores"]["yes_no_correct"] for p in yes_no) / len(yes_no))
    assert all(0 <= metrics["overall"][f"bleu{n}"] <= 100 for n in (1, 2, 3, 4))
    assert [t.description for t in reporter.tasks] == ["eval", "generate"] and reporter.tasks[1].completed == len(predictions)
    markdown = (report.output_dir / "metrics.md").read_text()
    assert "| group | n | headline [95% CI] | sBLEU1 | sBLEU2 | sBLEU3 | sBLEU4 | BLEU1 | BLEU2 | BLEU3 | BLEU4 | EM | yes/no (n) |" in markdown
    assert "- score format: `clean`" in markdown


def test_zero_shot_base_model_official_score_format_and_stale_predictions(stage1_run, processed_data, vlmft_home, loss_only):
    out, _ = stage1_run
    request = EvalRequest(data=processed_data, model="tiny-internvl3", stage=1, limit=3, generate=True, max_new_tokens=4, score_format="official", runs_dir=out, home=vlmft_home)
    report = evaluate_checkpoint(request)
    # The official format scores the official targets: `A: ` + prediction against `A: ` + reference.
    assert report.metrics["generation"]["score_format"] == "official"
    for line in jsonl(report.output_dir / "predictions.jsonl"):
        expected = sacrebleu.sentence_bleu(f"A: {line['prediction'].strip()}", [f"A: {line['reference']}"]).score
        assert line["scores"]["bleu4"] == pytest.approx(expected, abs=1e-9)
    assert "- score format: `official`" in (report.output_dir / "metrics.md").read_text()
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
    with pytest.raises(ConfigError, match="score format must be one of clean, official"):
        evaluate_checkpoint(EvalRequest(data=processed_data, model="tiny-internvl3", score_format="paper", runs_dir=tmp_path, home=vlmft_home))


def test_score_format_option_of_vlmft_eval(stage1_run, processed_data, vlmft_home, monkeypatch):
    from typer.testing import CliRunner

    from vlmft_cli.cli.app import app

    out, _ = stage1_run
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    args = ["eval", "--model", "tiny-internvl3", "--stage", "1", "--data", str(processed_data), "--limit", "1", "--generate", "--max-new-tokens", "2", "--runs-dir", str(out)]
    shown = CliRunner().invoke(app, [*args, "--score-format", "official", "--out", str(out / "official-cli")])
    assert shown.exit_code == 0, shown.output
    assert "official" in shown.output
    assert json.loads((out / "official-cli" / "metrics.json").read_text())["generation"]["score_format"] == "official"
    refused = CliRunner().invoke(app, [*args, "--score-format", "paper"])
    assert refused.exit_code == 2 and "paper" in refused.output
