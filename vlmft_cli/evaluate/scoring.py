"""Answer scores as RoboVQA reports them: sacrebleu BLEU-1..4, exact match and yes/no accuracy.

Sentence BLEU uses `effective_order=True` (orders the hypothesis is too short for are left out, so a
correct one-word answer scores 100); corpus BLEU pools n-gram counts over a group of answers. Both use
sacrebleu's defaults otherwise (13a tokenizer, case-sensitive, exponential smoothing). Exact match and
yes/no accuracy compare normalised answers: lower-case, punctuation removed, whitespace collapsed.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

BLEU_ORDERS: tuple[int, ...] = (1, 2, 3, 4)
YES_NO: frozenset[str] = frozenset({"yes", "no"})


@cache
def _bleu(order: int, sentence: bool) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=order, effective_order=sentence)


def sentence_bleu(prediction: str, reference: str, order: int = 4) -> float:
    """sacrebleu sentence BLEU-`order` (0-100) with effective order."""
    return float(_bleu(order, True).sentence_score(prediction, [reference]).score)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], order: int = 4) -> float | None:
    """sacrebleu corpus BLEU-`order` (0-100) over paired answers; None for an empty group."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return None
    return float(_bleu(order, False).corpus_score(list(predictions), [list(references)]).score)


def normalize_answer(text: str) -> str:
    """Lower-case, punctuation (any Unicode P* character) removed, whitespace collapsed."""
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(kept.split())


def is_yes_no(reference: str) -> bool:
    """Whether a reference answer is a yes/no answer (after normalisation)."""
    return normalize_answer(reference) in YES_NO


@dataclass(frozen=True)
class AnswerScores:
    """Scores of one predicted answer against its reference."""

    bleu: dict[int, float]  # sentence BLEU by n-gram order
    exact_match: bool
    yes_no_correct: bool | None  # None when the reference is not yes/no

    def as_dict(self) -> dict[str, Any]:
        return {
            **{f"bleu{order}": value for order, value in self.bleu.items()},
            "exact_match": self.exact_match,
            "yes_no_correct": self.yes_no_correct,
        }


def score_answer(prediction: str, reference: str) -> AnswerScores:
    exact = normalize_answer(prediction) == normalize_answer(reference)
    return AnswerScores(
        bleu={order: sentence_bleu(prediction, reference, order) for order in BLEU_ORDERS},
        exact_match=exact,
        yes_no_correct=exact if is_yes_no(reference) else None,
    )


@dataclass(frozen=True)
class ScoredAnswer:
    prediction: str
    reference: str
    scores: AnswerScores


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def group_scores(answers: Sequence[ScoredAnswer]) -> dict[str, Any]:
    """Scores of a group of answers: corpus BLEU-n (`bleu{n}`), mean sentence BLEU-n
    (`sentence_bleu{n}`), exact match, and yes/no accuracy over its yes/no answers."""
    predictions = [a.prediction for a in answers]
    references = [a.reference for a in answers]
    yes_no = [a.scores.yes_no_correct for a in answers if a.scores.yes_no_correct is not None]
    result: dict[str, Any] = {"answers": len(answers)}
    for order in BLEU_ORDERS:
        result[f"bleu{order}"] = corpus_bleu(predictions, references, order)
    for order in BLEU_ORDERS:
        result[f"sentence_bleu{order}"] = _mean([a.scores.bleu[order] for a in answers])
    result["exact_match"] = _mean([float(a.scores.exact_match) for a in answers])
    result["yes_no_accuracy"] = _mean([float(correct) for correct in yes_no])
    result["yes_no_count"] = len(yes_no)
    return result
