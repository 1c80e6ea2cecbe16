"""Metrics per task: the full tag (type and subtype) as the task, the paper's names, the metric that means
something for each task, per-task loss from per-QA losses, intervals, and what metrics.md shows."""

import math
import random
from types import SimpleNamespace

import pytest

from vlmft_cli.data.grammar import parse_texts, render_block
from vlmft_cli.data.schema import TurnInfo
from vlmft_cli.data.synth import FAMILY_WEIGHTS, make_task_block
from vlmft_cli.evaluate.metrics import PAPER_TASKS, Prediction, merge_groups, task_key
from vlmft_cli.evaluate.prompts import generation_jobs
from vlmft_cli.evaluate.report_files import generation_table, metrics_markdown, summary_table
from vlmft_cli.evaluate.scoring import score_answer
from vlmft_cli.model_backend import Turn
from vlmft_cli.pipeline.examples import Example


def parsed_key(tag: str, answer: str = "yes") -> str:
    (qa,) = parse_texts([render_block(tag, "Q: x?", answer, "binary" if answer in ("yes", "no") else "freeform")]).qas
    return task_key(qa.task_type, qa.subtype)


def test_task_keys_keep_type_and_subtype_and_drop_the_answer_label():
    # Tags as the release writes them, through the QA parser.
    assert parsed_key("<task:affordance:discriminative:discrete:True>") == "affordance:discriminative"
    assert parsed_key("<task:affordance:discriminative:discrete:False>", "no") == "affordance:discriminative"
    assert parsed_key("<task:affordance:generative:positive:freeform>", "open the drawer") == "affordance:generative:positive"
    assert parsed_key("<task:success:discrete:False>", "no") == "success"
    assert parsed_key("<task:planning:freeform>", "open the drawer") == "planning"
    assert parsed_key("<task:immediate_planning_with_context20:freeform>", "open it") == "immediate_planning_with_context20"
    assert parsed_key("<task:remaining5_planning_with_context20:freeform>", "1- open it 2- done") == "remaining5_planning_with_context20"
    # Every tag the synthetic data writes (the release's grammar) is one of the paper's tasks, and each
    # paper task is written: nothing falls outside the table.
    rng = random.Random(0)
    keys = set()
    for _ in range(400):
        for qa in parse_texts([make_task_block(rng, family) for family in FAMILY_WEIGHTS]).qas:
            keys.add(task_key(qa.task_type, qa.subtype))
    assert keys == set(PAPER_TASKS)
    assert PAPER_TASKS["affordance:discriminative"].name == "discriminative affordance" and PAPER_TASKS["affordance:discriminative"].binary
    assert PAPER_TASKS["affordance:generative:positive"].name == "generative affordance" and not PAPER_TASKS["affordance:generative:positive"].binary
    assert PAPER_TASKS["success"].binary and not PAPER_TASKS["planning"].binary


#: (task type, subtype, question, reference, prediction, loss sum, tokens) of one QA per example.
QAS = [
    ("affordance", "discriminative:True", "open the drawer Q: possible right now?", "yes", "yes", 1.0, 2),
    ("affordance", "discriminative:False", "open the drawer Q: possible right now?", "no", "no", 3.0, 2),
    ("affordance", "generative:positive", "Q: what action is possible right now?", "open the top drawer", "open the drawer", 8.0, 4),
    ("success", "True", "put book on the table Q: satisfied?", "yes", "yes", 0.5, 2),
    ("success", "False", "put book on the table Q: satisfied?", "no", "yes", 2.5, 2),
    ("planning", None, "current goal is: tidy up Q: immediate next step?", "pick up the cup", "pick up the cup", 1.0, 5),
    ("immediate_planning_with_context20", None, "last 20 steps: 1- open Q: immediate next step?", "close the drawer", "close it", 6.0, 3),
    ("remaining5_planning_with_context20", None, "Q: next 5 steps?", "1- close the drawer 2- done", "1- close the drawer 2- done", 2.0, 10),
]


def examples_and_losses():
    examples = [
        Example(id=f"v{i}-0", images=(), turns=(Turn("user", q), Turn("assistant", ref)), turn_info=(TurnInfo(t, sub, "freeform", None),), video_id=f"v{i}", length=0)
        for i, (t, sub, q, ref, _, _, _) in enumerate(QAS)
    ]
    qa_losses = [SimpleNamespace(example=i, turn=0, task_type=qa[0], loss_sum=qa[5], tokens=qa[6]) for i, qa in enumerate(QAS)]
    total_sum, total_tokens = sum(qa[5] for qa in QAS), sum(qa[6] for qa in QAS)
    loss = {"loss": total_sum / total_tokens, "perplexity": math.exp(total_sum / total_tokens), "tokens": total_tokens, "per_task": {}, "per_turn": {"0": {"loss": total_sum / total_tokens, "perplexity": 1.0, "tokens": total_tokens}}}
    return examples, loss, qa_losses


def generated_metrics(score_format="clean"):
    examples, loss, qa_losses = examples_and_losses()
    jobs = generation_jobs(examples)
    predictions = [Prediction(job, qa[4], score_answer(qa[4], job.reference, score_format)) for job, qa in zip(jobs, QAS, strict=True)]
    return merge_groups(examples, loss, predictions, per_turn=False, qa_losses=qa_losses), predictions


def test_each_task_is_its_own_group_with_the_paper_name_its_loss_and_its_headline_metric():
    metrics, _ = generated_metrics()
    per_task = metrics["per_task"]
    # Affordance is two tasks; the planning variants stay apart; in the paper's order.
    assert {task: group["qas"] for task, group in per_task.items()} == {
        "planning": 1, "immediate_planning_with_context20": 1, "remaining5_planning_with_context20": 1, "success": 2,
        "affordance:discriminative": 2, "affordance:generative:positive": 1,
    }  # fmt: skip
    assert list(per_task) == [task for task in PAPER_TASKS if task in per_task]
    disc, gen = per_task["affordance:discriminative"], per_task["affordance:generative:positive"]
    assert disc["paper_task"] == "discriminative affordance" and disc["task_type"] == "affordance" and disc["binary"] is True
    assert gen["paper_task"] == "generative affordance" and gen["binary"] is False
    # The loss of each task from its own QAs: (1 + 3) / (2 + 2) and 8 / 4, not the two pooled.
    assert disc["loss"] == pytest.approx(1.0) and disc["tokens"] == 4 and gen["loss"] == pytest.approx(2.0)
    assert disc["perplexity"] == pytest.approx(math.e)
    assert per_task["success"]["loss"] == pytest.approx(3.0 / 4)
    # Binary tasks are judged by yes/no accuracy, the others by mean sentence BLEU-4.
    assert disc["headline"] == "yes_no_accuracy" and per_task["success"]["headline"] == "yes_no_accuracy"
    assert gen["headline"] == "sentence_bleu4" and per_task["planning"]["headline"] == "sentence_bleu4"
    # Both yes/no answers of discriminative affordance are right: accuracy 1 and sentence BLEU-4 100,
    # while corpus BLEU-4 of one-word answers is 0; success got one of two.
    assert disc["yes_no_accuracy"] == 1.0 and disc["sentence_bleu4"] == pytest.approx(100.0) and disc["bleu4"] == 0.0
    assert per_task["success"]["yes_no_accuracy"] == 0.5 and per_task["success"]["yes_no_count"] == 2
    assert gen["yes_no_accuracy"] is None and gen["yes_no_count"] == 0
    # Each group carries its count and a 95% interval of each metric; the document says how.
    assert disc["answers"] == 2 and disc["ci95"]["yes_no_accuracy"] == [1.0, 1.0]
    low, high = per_task["success"]["ci95"]["yes_no_accuracy"]
    assert low == 0.0 and high == 1.0  # two answers, one right: a resample can hold either twice
    assert metrics["intervals"]["resamples"] == 1000 and metrics["intervals"]["confidence"] == 0.95
    assert metrics["overall"]["qas"] == len(QAS) and set(metrics["overall"]["ci95"]) >= {"bleu4", "sentence_bleu4", "yes_no_accuracy"}


def test_a_task_the_table_does_not_know_is_binary_when_its_answers_are_yes_or_no():
    examples = [
        Example(id=f"v{i}", images=(), turns=(Turn("user", "Q: x?"), Turn("assistant", answer)), turn_info=(TurnInfo(task, None, "freeform", None),), video_id=f"v{i}", length=0)
        for i, (task, answer) in enumerate([("novel_check", "yes"), ("novel_check", "No."), ("novel_text", "yes"), ("novel_text", "open it")])
    ]
    loss = {"loss": 1.0, "perplexity": math.e, "tokens": 4, "per_task": {}, "per_turn": {}}
    metrics = merge_groups(examples, loss, None, per_turn=False, qa_losses=[])
    assert metrics["per_task"]["novel_check"]["binary"] is True and metrics["per_task"]["novel_check"]["paper_task"] is None
    assert metrics["per_task"]["novel_text"]["binary"] is False and "intervals" not in metrics


def test_metrics_markdown_shows_the_score_format_tasks_headlines_and_intervals():
    metrics, _ = generated_metrics("official")
    document = {
        "model": {"label": "m", "model": "tiny", "checkpoint": None, "step": 0},
        "eval_set": {"stage": 1, "split": "val", "file": "d/stage1/val.jsonl", "examples": 8, "qas": 8, "limit": None, "max_frames": 4, "frame_sampling": "uniform-last", "max_length": 2048},
        "generation": {"max_new_tokens": 8, "batch_size": 2, "decoding": "greedy", "score_format": "official"},
        **metrics,
    }
    markdown = metrics_markdown(document)
    assert "- score format: `official`" in markdown and "`A: yes`" in markdown
    assert "## Generation (official score format)" in markdown and "## Bootstrap 95% intervals" in markdown
    columns, rows = generation_table(document)
    row = next(r for r in rows if r[0] == "affordance:discriminative (discriminative affordance)")
    assert row[columns.index("n")] == "2" and row[columns.index("headline [95% CI]")] == "acc 1.000 [1.000, 1.000]"
    assert row[columns.index("BLEU4")] == "0.00" and row[columns.index("yes/no (n)")] == "1.000 (2)"
    # In the official format the wrong success answer "yes" for "no" still scores BLEU (A : against A :).
    success = next(r for r in rows if r[0].startswith("success"))
    assert float(success[columns.index("sBLEU4")]) > 50.0
    loss_columns, loss_rows = summary_table(document)
    assert loss_columns == ["group", "QAs", "loss", "ppl"]
    assert ["affordance:generative:positive (generative affordance)", "1", "2.0000", f"{math.exp(2.0):.3f}"] in loss_rows
