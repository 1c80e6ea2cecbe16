"""The metrics of one evaluation: teacher-forced loss and generation scores, overall, per task type and
(stage 2) per turn, merged into one document (what metrics.json holds).

Each group carries `qas`, `loss`, `perplexity` and `tokens`; with generation also corpus BLEU-n
(`bleu1`…`bleu4`), mean sentence BLEU-n (`sentence_bleu1`…), `exact_match`, `yes_no_accuracy` and
`yes_no_count`. Turns are numbered from 1. Values that do not exist (NaN, empty groups) are null.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlmft_cli.evaluate.prompts import GenerationJob
from vlmft_cli.evaluate.scoring import AnswerScores, ScoredAnswer, group_scores
from vlmft_cli.pipeline.examples import Example

OVERALL = "overall"


@dataclass(frozen=True)
class Prediction:
    """One generated answer with what it answers and how it scored (a line of predictions.jsonl)."""

    job: GenerationJob
    prediction: str
    scores: AnswerScores

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.job.example_id,
            "task_type": self.job.task_type,
            "subtype": self.job.subtype,
            "format": self.job.format,
            "turn": self.job.turn + 1,
            "question": self.job.question,
            "reference": self.job.reference,
            "prediction": self.prediction,
            "scores": self.scores.as_dict(),
        }

    def scored(self) -> ScoredAnswer:
        return ScoredAnswer(self.prediction, self.job.reference, self.scores)


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN); containers are converted throughout."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    return value


def qa_counts(examples: Sequence[Example]) -> tuple[Counter[str], Counter[str]]:
    """QAs per task type and per turn (1-based, as strings)."""
    per_task: Counter[str] = Counter()
    per_turn: Counter[str] = Counter()
    for example in examples:
        for turn, info in enumerate(example.turn_info):
            per_task[info.task_type] += 1
            per_turn[str(turn + 1)] += 1
    return per_task, per_turn


def loss_groups(loss: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """`EvalResult.as_dict()` regrouped: overall, per task, per turn (renumbered from 1)."""
    keys = ("loss", "perplexity", "tokens")
    return {
        OVERALL: {OVERALL: {key: loss[key] for key in keys}},
        "per_task": {task: {key: values[key] for key in keys} for task, values in loss["per_task"].items()},
        "per_turn": {str(int(turn) + 1): {key: values[key] for key in keys} for turn, values in loss["per_turn"].items()},
    }


def generation_groups(predictions: Sequence[Prediction]) -> dict[str, dict[str, dict[str, Any]]]:
    """Generation scores of all predictions, per task type and per turn (1-based)."""
    per_task: dict[str, list[ScoredAnswer]] = defaultdict(list)
    per_turn: dict[str, list[ScoredAnswer]] = defaultdict(list)
    for prediction in predictions:
        per_task[prediction.job.task_type].append(prediction.scored())
        per_turn[str(prediction.job.turn + 1)].append(prediction.scored())
    return {
        OVERALL: {OVERALL: group_scores([p.scored() for p in predictions])},
        "per_task": {task: group_scores(answers) for task, answers in per_task.items()},
        "per_turn": {turn: group_scores(answers) for turn, answers in per_turn.items()},
    }


def merge_groups(examples: Sequence[Example], loss: dict[str, Any], predictions: Sequence[Prediction] | None, *, per_turn: bool) -> dict[str, Any]:
    """overall / per_task / per_turn, each group with its QA count, loss and (if any) generation scores."""
    task_counts, turn_counts = qa_counts(examples)
    counts = {OVERALL: {OVERALL: sum(task_counts.values())}, "per_task": dict(task_counts), "per_turn": dict(turn_counts)}
    parts = [loss_groups(loss)] + ([generation_groups(predictions)] if predictions is not None else [])
    merged: dict[str, Any] = {}
    for section in (OVERALL, "per_task", "per_turn"):
        if section == "per_turn" and not per_turn:
            continue
        groups: dict[str, dict[str, Any]] = {}
        for name in sorted(counts[section], key=lambda n: (int(n) if n.isdigit() else 0, n)):
            group: dict[str, Any] = {"qas": counts[section][name]}
            for part in parts:
                group.update(part[section].get(name, {}))
            groups[name] = group
        merged[section] = groups[OVERALL] if section == OVERALL else groups
    return finite_or_none(merged)
