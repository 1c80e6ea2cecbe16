"""The metrics of one evaluation: teacher-forced loss and generation scores, overall, per task and
(stage 2) per turn, merged into one document (what metrics.json holds).

A task is the full task tag without its answer label (`task_key`): the type and the subtype, so
`affordance:discriminative` (yes/no) and `affordance:generative:positive` (free-form) are two tasks, and
the planning variants stay apart; the trailing `True`/`False` of discriminative affordance and success
tags is the answer itself and not part of the key. `PAPER_TASKS` names each task as the RoboVQA paper
does and says whether it is a yes/no (binary) task; a task it does not know is binary when every one of
its reference answers is yes or no.

Each group carries `qas`, `loss`, `perplexity` and `tokens` (summed over its QAs' answer tokens); with
generation also `answers`, corpus BLEU-n (`bleu1`…`bleu4`), mean sentence BLEU-n (`sentence_bleu1`…),
`exact_match`, `yes_no_accuracy` and `yes_no_count`, and `ci95`: a bootstrap 95% interval of each of
them (see `scoring`). A task group also says its `task_type`, `paper_task`, whether it is `binary`, and
its `headline` metric: yes/no accuracy for a binary task, mean sentence BLEU-4 otherwise (corpus BLEU-4
is 0 for any group of answers shorter than four words). Turns are numbered from 1. Values that do not
exist (NaN, empty groups) are null.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlmft_cli.evaluate.prompts import GenerationJob
from vlmft_cli.evaluate.scoring import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    AnswerScores,
    ScoredAnswer,
    bootstrap_intervals,
    group_scores,
    is_yes_no,
)
from vlmft_cli.pipeline.examples import Example

OVERALL = "overall"
ACCURACY, SENTENCE_BLEU = "yes_no_accuracy", "sentence_bleu4"
#: Subtype fields that are the answer (the release's `…:discrete:True` tags), not part of a task.
LABEL_FIELDS = frozenset({"true", "false"})


@dataclass(frozen=True)
class PaperTask:
    name: str  # as the RoboVQA paper (arXiv 2311.00899) names the task
    binary: bool  # answered yes or no


#: Task keys of the release's tags → the paper's task names, in the paper's order.
PAPER_TASKS: dict[str, PaperTask] = {
    "planning": PaperTask("planning", False),
    "immediate_planning_with_context20": PaperTask("planning with context", False),
    "remaining5_planning_with_context20": PaperTask("remaining steps planning with context", False),
    "success": PaperTask("success", True),
    "affordance:discriminative": PaperTask("discriminative affordance", True),
    "affordance:generative:positive": PaperTask("generative affordance", False),
    "past_description": PaperTask("past description", False),
    "future_prediction": PaperTask("future prediction", False),
}


def task_key(task_type: str, subtype: str | None) -> str:
    """`affordance` + `discriminative:True` → `affordance:discriminative`; `planning` + None → `planning`."""
    fields = [field for field in (subtype or "").split(":") if field]
    if fields and fields[-1].lower() in LABEL_FIELDS:
        fields.pop()
    return ":".join([task_type, *fields])


def task_order(key: str) -> tuple[int, str]:
    """Paper tasks in the paper's order, then the others by name."""
    known = list(PAPER_TASKS)
    return (known.index(key), key) if key in known else (len(known), key)


def headline_metric(binary: bool) -> str:
    return ACCURACY if binary else SENTENCE_BLEU


@dataclass(frozen=True)
class Prediction:
    """One generated answer with what it answers and how it scored (a line of predictions.jsonl)."""

    job: GenerationJob
    prediction: str
    scores: AnswerScores

    @property
    def task(self) -> str:
        return task_key(self.job.task_type, self.job.subtype)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.job.example_id,
            "task": self.task,
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


@dataclass(frozen=True)
class TaskCounts:
    """QAs per task and per turn (1-based, as strings), each task's type, and which tasks hold only
    yes/no reference answers."""

    per_task: Counter[str]
    per_turn: Counter[str]
    task_types: dict[str, str]
    all_yes_no: dict[str, bool]


def qa_counts(examples: Sequence[Example]) -> TaskCounts:
    per_task: Counter[str] = Counter()
    per_turn: Counter[str] = Counter()
    task_types: dict[str, str] = {}
    all_yes_no: dict[str, bool] = {}
    for example in examples:
        for turn, info in enumerate(example.turn_info):
            key = task_key(info.task_type, info.subtype)
            per_task[key] += 1
            per_turn[str(turn + 1)] += 1
            task_types[key] = info.task_type
            all_yes_no[key] = all_yes_no.get(key, True) and is_yes_no(example.turns[2 * turn + 1].text)
    return TaskCounts(per_task, per_turn, task_types, all_yes_no)


def task_description(key: str, task_type: str, all_yes_no: bool) -> dict[str, Any]:
    """`task_type`, `paper_task`, `binary` and `headline` of a task group."""
    paper = PAPER_TASKS.get(key)
    binary = paper.binary if paper else all_yes_no
    return {"task_type": task_type, "paper_task": paper.name if paper else None, "binary": binary, "headline": headline_metric(binary)}


def _loss_values(loss_sum: float, tokens: int) -> dict[str, Any]:
    loss = loss_sum / tokens if tokens else float("nan")
    return {"loss": loss, "perplexity": math.exp(loss) if tokens else float("nan"), "tokens": tokens}


def loss_groups(loss: dict[str, Any], examples: Sequence[Example], qa_losses: Sequence[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Loss overall and per turn (renumbered from 1) from `EvalResult.as_dict()`, and per task from the
    per-QA losses (each with `example`, an index into `examples`, a 0-based `turn`, `loss_sum`, `tokens`)."""
    keys = ("loss", "perplexity", "tokens")
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for qa in qa_losses:
        info = examples[qa.example].turn_info[qa.turn]
        total = sums[task_key(info.task_type, info.subtype)]
        total[0] += qa.loss_sum
        total[1] += qa.tokens
    return {
        OVERALL: {OVERALL: {key: loss[key] for key in keys}},
        "per_task": {task: _loss_values(loss_sum, int(tokens)) for task, (loss_sum, tokens) in sums.items()},
        "per_turn": {str(int(turn) + 1): {key: values[key] for key in keys} for turn, values in loss["per_turn"].items()},
    }


def scored_group(answers: Sequence[ScoredAnswer]) -> dict[str, Any]:
    """`group_scores` with the bootstrap 95% interval of each (`ci95`)."""
    return {**group_scores(answers), "ci95": bootstrap_intervals([answer.scores for answer in answers])}


def generation_groups(predictions: Sequence[Prediction]) -> dict[str, dict[str, dict[str, Any]]]:
    """Generation scores of all predictions, per task and per turn (1-based), with intervals."""
    per_task: dict[str, list[ScoredAnswer]] = defaultdict(list)
    per_turn: dict[str, list[ScoredAnswer]] = defaultdict(list)
    for prediction in predictions:
        per_task[prediction.task].append(prediction.scored())
        per_turn[str(prediction.job.turn + 1)].append(prediction.scored())
    return {
        OVERALL: {OVERALL: scored_group([p.scored() for p in predictions])},
        "per_task": {task: scored_group(answers) for task, answers in per_task.items()},
        "per_turn": {turn: scored_group(answers) for turn, answers in per_turn.items()},
    }


def interval_method() -> dict[str, Any]:
    """How the `ci95` intervals were computed (metrics.json's `intervals`)."""
    return {
        "method": "percentile bootstrap over the QAs of each group (corpus BLEU recomputed on each resample)",
        "confidence": CONFIDENCE,
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": BOOTSTRAP_SEED,
    }


def merge_groups(
    examples: Sequence[Example], loss: dict[str, Any], predictions: Sequence[Prediction] | None, *, per_turn: bool, qa_losses: Sequence[Any]
) -> dict[str, Any]:
    """overall / per_task / per_turn, each group with its QA count, loss and (if any) generation scores
    with intervals; `intervals` says how those were computed."""
    counts = qa_counts(examples)
    sections = {OVERALL: {OVERALL: sum(counts.per_task.values())}, "per_task": dict(counts.per_task), "per_turn": dict(counts.per_turn)}
    parts = [loss_groups(loss, examples, qa_losses)] + ([generation_groups(predictions)] if predictions is not None else [])
    merged: dict[str, Any] = {}
    for section, names in sections.items():
        if section == "per_turn" and not per_turn:
            continue
        order = task_order if section == "per_task" else (lambda n: (int(n) if n.isdigit() else 0, n))
        groups: dict[str, dict[str, Any]] = {}
        for name in sorted(names, key=order):
            group: dict[str, Any] = {"qas": names[name]}
            if section == "per_task":
                group.update(task_description(name, counts.task_types[name], counts.all_yes_no[name]))
            else:
                group["headline"] = SENTENCE_BLEU
            for part in parts:
                group.update(part[section].get(name, {}))
            groups[name] = group
        merged[section] = groups[OVERALL] if section == OVERALL else groups
    if predictions is not None:
        merged["intervals"] = interval_method()
    return finite_or_none(merged)
