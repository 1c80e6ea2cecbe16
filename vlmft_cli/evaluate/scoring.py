"""Answer scores as RoboVQA reports them: sacrebleu BLEU-1..4, exact match and yes/no accuracy, with
bootstrap 95% intervals.

Sentence BLEU uses `effective_order=True` (orders the hypothesis is too short for are left out, so a
correct one-word answer scores 100, as the paper scores single answers); corpus BLEU pools n-gram counts
over a group of answers and has no effective order, so a group of one-word answers has corpus BLEU-2..4
of 0 whatever the answers. Both use sacrebleu's defaults otherwise (13a tokenizer, case-sensitive,
exponential smoothing). Every answer is tokenized once: its n-gram counts (`ngrams`) give its sentence
BLEU-1..4 and, summed over a group, the group's corpus BLEU-1..4, exactly as sacrebleu computes them.
Exact match and yes/no accuracy compare normalised answers: lower-case, punctuation removed, whitespace
collapsed.

Score formats (`vlmft eval --score-format`): `clean` scores the answer text vlmft trains on (`yes`);
`official` scores the text the official loader makes the target, which keeps the answer marker
(`A: yes`), with the prediction put in the same form (`A: ` + prediction, unless it already starts with
the marker). Exact match and yes/no accuracy are the same in both: they compare the answers alone.

Intervals: a percentile bootstrap over the QAs of a group (`BOOTSTRAP_RESAMPLES` resamples with
replacement, seeded), every metric recomputed on each resample (corpus BLEU from the resampled
answers' summed n-gram counts), the interval between the 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from vlmft_cli.errors import ConfigError
from vlmft_cli.settings import SettingEnum

if TYPE_CHECKING:
    import numpy as np

BLEU_ORDERS: tuple[int, ...] = (1, 2, 3, 4)
YES_NO: frozenset[str] = frozenset({"yes", "no"})
#: The official loader's answer marker, kept at the start of its targets.
OFFICIAL_MARKER = "A:"
_MARKER_RE = re.compile(r"\s*A:", re.IGNORECASE)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: Every metric of a group that gets an interval (the keys of `group_scores`).
INTERVAL_METRICS: tuple[str, ...] = (
    *(f"sentence_bleu{order}" for order in BLEU_ORDERS),
    *(f"bleu{order}" for order in BLEU_ORDERS),
    "exact_match",
    "yes_no_accuracy",
)


class ScoreFormat(SettingEnum):
    """Which text BLEU compares (see the module docstring)."""

    CLEAN = "clean"
    OFFICIAL = "official"


def parse_score_format(value: ScoreFormat | str) -> ScoreFormat:
    try:
        return ScoreFormat(value)
    except ValueError:
        choices = ", ".join(str(choice) for choice in ScoreFormat)
        raise ConfigError(f"score format must be one of {choices}, not {value!r}") from None


def official_text(text: str) -> str:
    """`text` as the official target writes an answer: `A: yes`."""
    stripped = text.strip()
    if _MARKER_RE.match(stripped):
        return stripped
    return f"{OFFICIAL_MARKER} {stripped}".rstrip()


def scored_texts(prediction: str, reference: str, score_format: ScoreFormat | str = ScoreFormat.CLEAN) -> tuple[str, str]:
    """The (hypothesis, reference) pair BLEU compares under `score_format`."""
    if ScoreFormat(score_format) is ScoreFormat.OFFICIAL:
        return official_text(prediction), official_text(reference)
    return prediction, reference


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


def ngram_counts(prediction: str, reference: str) -> tuple[int, ...]:
    """sacrebleu's sufficient statistics of one pair: hypothesis length, reference length, matched
    1..4-grams, hypothesis 1..4-grams (10 integers)."""
    score = _bleu(4, True).sentence_score(prediction, [reference])
    return (int(score.sys_len), int(score.ref_len), *(int(c) for c in score.counts), *(int(t) for t in score.totals))


def bleu_from_counts(counts: Sequence[float], order: int, *, sentence: bool) -> float:
    """BLEU-`order` from (summed) `ngram_counts`, by sacrebleu's own formula: sentence BLEU (effective
    order) for one pair's counts, corpus BLEU for a group's sums."""
    from sacrebleu.metrics import BLEU

    values = [int(round(float(value))) for value in counts]
    return float(
        BLEU.compute_bleu(
            correct=values[2 : 2 + order],
            total=values[6 : 6 + order],
            sys_len=values[0],
            ref_len=values[1],
            smooth_method="exp",
            effective_order=sentence,
            max_ngram_order=order,
        ).score
    )


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
    ngrams: tuple[int, ...] = ()  # `ngram_counts` of the scored texts

    def as_dict(self) -> dict[str, Any]:
        return {
            **{f"bleu{order}": value for order, value in self.bleu.items()},
            "exact_match": self.exact_match,
            "yes_no_correct": self.yes_no_correct,
            "ngrams": list(self.ngrams),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerScores:
        """Back from `as_dict` (a predictions.jsonl line's `scores`)."""
        return cls(
            bleu={order: float(data[f"bleu{order}"]) for order in BLEU_ORDERS},
            exact_match=bool(data["exact_match"]),
            yes_no_correct=None if data.get("yes_no_correct") is None else bool(data["yes_no_correct"]),
            ngrams=tuple(int(value) for value in data.get("ngrams") or ()),
        )


def score_answer(prediction: str, reference: str, score_format: ScoreFormat | str = ScoreFormat.CLEAN) -> AnswerScores:
    """Sentence BLEU-1..4 of the pair in `score_format`; exact match and yes/no on the answers alone."""
    counts = ngram_counts(*scored_texts(prediction, reference, score_format))
    exact = normalize_answer(prediction) == normalize_answer(reference)
    return AnswerScores(
        bleu={order: bleu_from_counts(counts, order, sentence=True) for order in BLEU_ORDERS},
        exact_match=exact,
        yes_no_correct=exact if is_yes_no(reference) else None,
        ngrams=counts,
    )


@dataclass(frozen=True)
class ScoredAnswer:
    prediction: str
    reference: str
    scores: AnswerScores


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def group_scores(answers: Sequence[ScoredAnswer]) -> dict[str, Any]:
    """Scores of a group of answers: corpus BLEU-n (`bleu{n}`, from the summed n-gram counts of the scored
    texts), mean sentence BLEU-n (`sentence_bleu{n}`), exact match, and yes/no accuracy over its yes/no
    answers (`yes_no_count` of them)."""
    yes_no = [a.scores.yes_no_correct for a in answers if a.scores.yes_no_correct is not None]
    result: dict[str, Any] = {"answers": len(answers)}
    summed = [sum(column) for column in zip(*(a.scores.ngrams for a in answers), strict=True)] if answers else []
    for order in BLEU_ORDERS:
        result[f"bleu{order}"] = bleu_from_counts(summed, order, sentence=False) if answers else None
    for order in BLEU_ORDERS:
        result[f"sentence_bleu{order}"] = _mean([a.scores.bleu[order] for a in answers])
    result["exact_match"] = _mean([float(a.scores.exact_match) for a in answers])
    result["yes_no_accuracy"] = _mean([float(correct) for correct in yes_no])
    result["yes_no_count"] = len(yes_no)
    return result


# --- bootstrap -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreArrays:
    """The per-QA scores of a group as arrays (row i is QA i), for resampling."""

    sentence: np.ndarray  # (n, 4) sentence BLEU-1..4
    exact: np.ndarray  # (n,) 1.0 or 0.0
    yes_no_correct: np.ndarray  # (n,) 1.0 where a yes/no reference was answered right
    yes_no_valid: np.ndarray  # (n,) 1.0 where the reference is yes/no
    ngrams: np.ndarray  # (n, 10) `ngram_counts`

    @classmethod
    def of(cls, scores: Sequence[AnswerScores]) -> ScoreArrays:
        import numpy as np

        if any(len(s.ngrams) != 10 for s in scores):
            raise ValueError("every answer needs its n-gram counts to be resampled")
        return cls(
            sentence=np.array([[s.bleu[order] for order in BLEU_ORDERS] for s in scores], dtype=np.float64).reshape(len(scores), len(BLEU_ORDERS)),
            exact=np.array([float(s.exact_match) for s in scores], dtype=np.float64),
            yes_no_correct=np.array([float(bool(s.yes_no_correct)) for s in scores], dtype=np.float64),
            yes_no_valid=np.array([float(s.yes_no_correct is not None) for s in scores], dtype=np.float64),
            ngrams=np.array([s.ngrams for s in scores], dtype=np.float64).reshape(len(scores), 10),
        )

    def __len__(self) -> int:
        return int(self.exact.shape[0])

    def statistics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric of `INTERVAL_METRICS` for each row of `weights` (resamples × QAs: how many times
        each QA is drawn); yes/no accuracy is NaN for a resample without a yes/no question."""
        import numpy as np

        drawn = weights.sum(axis=1)
        result: dict[str, np.ndarray] = {}
        sentence = weights @ self.sentence
        for column, order in enumerate(BLEU_ORDERS):
            result[f"sentence_bleu{order}"] = sentence[:, column] / drawn
        counts = weights @ self.ngrams
        for order in BLEU_ORDERS:
            result[f"bleu{order}"] = np.array([bleu_from_counts(row, order, sentence=False) for row in counts])
        result["exact_match"] = weights @ self.exact / drawn
        valid = weights @ self.yes_no_valid
        with np.errstate(invalid="ignore", divide="ignore"):
            result["yes_no_accuracy"] = np.where(valid > 0, (weights @ self.yes_no_correct) / valid, np.nan)
        return result


def resample_weights(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, chunk_elements: int = 1 << 21) -> Iterator[np.ndarray]:
    """Bootstrap resamples of n items in chunks (rows: resamples, columns: how often each item is drawn).
    The draws are `numpy.random.default_rng(seed).integers(0, n, size=(resamples, n))`, row by row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    left = resamples
    while left > 0:
        rows = min(left, max(1, chunk_elements // max(n, 1)))
        drawn = rng.integers(0, n, size=(rows, n))
        flat = (drawn + np.arange(rows)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        left -= rows


def _percentiles(values: np.ndarray, confidence: float) -> list[float] | None:
    import numpy as np

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(
    scores: Sequence[AnswerScores], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> dict[str, list[float] | None]:
    """A percentile bootstrap interval of every metric of a group ([low, high]; None where the metric
    does not exist: an empty group, or yes/no accuracy without yes/no questions)."""
    import numpy as np

    if not scores:
        return dict.fromkeys(INTERVAL_METRICS)
    arrays = ScoreArrays.of(scores)
    chunks = [arrays.statistics(weights) for weights in resample_weights(len(arrays), resamples, seed)]
    intervals: dict[str, list[float] | None] = {}
    for metric in INTERVAL_METRICS:
        intervals[metric] = _percentiles(np.concatenate([chunk[metric] for chunk in chunks]), confidence)
    if not arrays.yes_no_valid.any():
        intervals["yes_no_accuracy"] = None
    return intervals


def paired_bootstrap(
    first: ScoreArrays, second: ScoreArrays, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> dict[str, list[float] | None]:
    """Interval of `second − first` for every metric, the same QAs (row i of both is the same question)
    drawn for both in each resample."""
    import numpy as np

    if len(first) != len(second):
        raise ValueError(f"paired scores need the same QAs: {len(first)} against {len(second)}")
    if len(first) == 0:
        return dict.fromkeys(INTERVAL_METRICS)
    differences: dict[str, list[np.ndarray]] = {metric: [] for metric in INTERVAL_METRICS}
    for weights in resample_weights(len(first), resamples, seed):
        a, b = first.statistics(weights), second.statistics(weights)
        for metric in INTERVAL_METRICS:
            differences[metric].append(b[metric] - a[metric])
    return {metric: _percentiles(np.concatenate(values), confidence) for metric, values in differences.items()}
