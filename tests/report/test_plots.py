"""The per-task chart: the metric that means something for each task (yes/no accuracy for binary tasks,
mean sentence BLEU-4 for the others), with counts, intervals, and a legend that says which."""

import math
from types import SimpleNamespace

import pytest
import sacrebleu
from PIL import Image

from vlmft_cli import runs
from vlmft_cli.data.schema import TurnInfo
from vlmft_cli.evaluate.metrics import Prediction, merge_groups
from vlmft_cli.evaluate.prompts import generation_jobs
from vlmft_cli.evaluate.scoring import score_answer
from vlmft_cli.model_backend import Turn
from vlmft_cli.pipeline.examples import Example
from vlmft_cli.report.plots import scores_by_task, task_bars, task_figure
from vlmft_cli.report.runs_data import RunData
from vlmft_cli.report.summary import markdown
from vlmft_cli.run_record import RunRecord

#: (task type, subtype, reference, prediction): perfect yes/no answers for success, as in the issue, and
#: free-form answers for generative affordance and planning.
QAS = [
    ("success", "True", "yes", "yes"),
    ("success", "False", "no", "no"),
    ("success", "True", "yes", "yes"),
    ("success", "False", "no", "no"),
    ("affordance", "generative:positive", "open the top drawer", "open the drawer"),
    ("affordance", "generative:positive", "pick up the cup", "pick up the cup"),
    ("planning", None, "put book on the table", "put the book on a table"),
]


def evaluation(generate=True):
    examples = [
        Example(id=f"v{i}", images=(), turns=(Turn("user", "Q: x?"), Turn("assistant", ref)), turn_info=(TurnInfo(t, sub, "freeform", None),), video_id=f"v{i}", length=0)
        for i, (t, sub, ref, _) in enumerate(QAS)
    ]
    predictions = [Prediction(job, qa[3], score_answer(qa[3], job.reference)) for job, qa in zip(generation_jobs(examples), QAS, strict=True)] if generate else None
    qa_losses = [SimpleNamespace(example=i, turn=0, loss_sum=float(i + 1), tokens=2) for i in range(len(QAS))]
    loss = {"loss": 1.0, "perplexity": math.e, "tokens": 14, "per_task": {}, "per_turn": {}}
    return {
        "created": "2025-01-01T00:00:00Z",
        "model": {"label": "m"},
        "eval_set": {"stage": 1, "split": "val"},
        "generation": {"score_format": "clean"} if generate else None,
        **merge_groups(examples, loss, predictions, per_turn=False, qa_losses=qa_losses),
    }


def test_bars_show_accuracy_for_binary_tasks_and_sentence_bleu_for_the_others():
    doc = evaluation()
    bars = {bar.task: bar for bar in task_bars(doc)}
    success = bars["success"]
    # Perfect yes/no answers: corpus BLEU-4 0 (what the chart used to show), accuracy 100%.
    assert doc["per_task"]["success"]["bleu4"] == 0.0
    assert success.metric == "yes_no_accuracy" and success.value == pytest.approx(100.0) and success.count == 4
    assert success.interval == pytest.approx((100.0, 100.0)) and success.label == "success"
    generative = bars["affordance:generative:positive"]
    expected = (sacrebleu.sentence_bleu("open the drawer", ["open the top drawer"]).score + 100.0) / 2
    assert generative.metric == "sentence_bleu4" and generative.value == pytest.approx(expected) and generative.count == 2
    assert generative.label == "generative affordance"
    low, high = generative.interval
    assert low <= generative.value <= high
    assert bars["planning"].value == pytest.approx(sacrebleu.sentence_bleu("put the book on a table", ["put book on the table"]).score)
    # Without generation: the loss of each task, from its own QAs, and its QA count.
    loss_bars = {bar.task: bar for bar in task_bars(evaluation(generate=False))}
    assert loss_bars["success"].metric == "loss" and loss_bars["success"].value == pytest.approx((1 + 2 + 3 + 4) / 8) and loss_bars["success"].count == 4


def test_an_evaluation_written_before_tasks_said_their_metric_is_judged_by_its_answers():
    old = {"generation": {}, "per_task": {"success": {"answers": 4, "yes_no_count": 4, "yes_no_accuracy": 0.75, "bleu4": 0.0, "sentence_bleu4": 75.0}, "planning": {"answers": 3, "yes_no_count": 0, "sentence_bleu4": 20.0}}}
    bars = {bar.task: bar for bar in task_bars(old)}
    assert bars["success"].metric == "yes_no_accuracy" and bars["success"].value == pytest.approx(75.0) and bars["success"].interval is None
    assert bars["planning"].metric == "sentence_bleu4" and bars["planning"].value == 20.0


def run_data(tmp_path, name, stage, doc):
    return RunData(run=runs.Run(tmp_path / name), record=RunRecord(stage=stage), train=[], evals=[], evaluations=[doc])


def test_chart_legend_and_axis_say_which_metric_and_the_png_is_written(tmp_path):
    items = [run_data(tmp_path, "stage1_a", 1, evaluation()), run_data(tmp_path, "stage2_b", 2, evaluation())]
    fig = task_figure(items)
    ax = fig.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "hatched: yes/no accuracy (%), binary tasks" in legend and "solid: mean sentence BLEU-4, free-form tasks" in legend
    assert any(text.startswith("stage 1 (stage1_a), stage 1 val, clean score format") for text in legend)
    assert "accuracy" in ax.get_ylabel() and "sentence BLEU-4" in ax.get_ylabel()
    ticks = [label.get_text() for label in ax.get_xticklabels()]
    assert ticks == ["planning\n(sBLEU-4)", "success\n(accuracy)", "generative\naffordance\n(sBLEU-4)"]
    counts = sorted(text.get_text() for text in ax.texts)
    assert counts == sorted(["n=1", "n=4", "n=2"] * 2)
    heights = sorted(round(patch.get_height(), 6) for patch in ax.patches)
    assert heights.count(100.0) >= 2  # the success bars of both runs: 100% accuracy, not 0 BLEU-4
    path = scores_by_task(items, tmp_path / "eval_by_task.png")
    image = Image.open(path)
    assert image.size[0] > 800 and image.size[1] > 500
    assert scores_by_task([run_data(tmp_path, "x", 1, evaluation())][:0], tmp_path / "none.png") is None


def test_summary_lists_each_task_with_its_metric_count_and_interval(tmp_path):
    item = run_data(tmp_path, "stage1_a", 1, evaluation())
    text = markdown([item], [])
    assert "## Scores per task" in text
    assert "| stage1_a | stage 1 val | success | - | yes/no accuracy (%) | 4 | 100.00 [100.00, 100.00] |" in text
    assert "| stage1_a | stage 1 val | affordance:generative:positive | generative affordance | mean sentence BLEU-4 | 2 |" in text
