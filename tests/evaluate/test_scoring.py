"""BLEU, exact match and yes/no accuracy against values worked out by hand from n-gram counts, and against
sacrebleu's own API called directly with the settings RoboVQA reports (13a tokenizer, case-sensitive,
exponential smoothing; effective order for sentence BLEU only).

Reference "put the cup on the table" (6 tokens), hypothesis "put cup on table" (4 tokens):
  matched n-grams / hypothesis n-grams: 1-grams 4/4, 2-grams 1/3 ("cup on"), 3-grams 0/2, 4-grams 0/1
  brevity penalty BP = exp(1 - 6/4) = exp(-0.5) = 0.6065307
  sacrebleu's default smoothing ("exp") replaces the k-th zero precision by 1 / (2^k * total):
  p3 = 1 / (2 * 2) = 0.25, p4 = 1 / (4 * 1) = 0.25
  BLEU-1 = BP * 1                                = 60.653066
  BLEU-2 = BP * (1 * 1/3) ** (1/2)               = 35.018064
  BLEU-3 = BP * (1 * 1/3 * 0.25) ** (1/3)        = 26.492667
  BLEU-4 = BP * (1 * 1/3 * 0.25 * 0.25) ** (1/4) = 23.043182
"""

import random

import numpy as np
import pytest
import sacrebleu
from sacrebleu.metrics import BLEU

from vlmft_cli.errors import ConfigError
from vlmft_cli.evaluate.scoring import (
    ScoreArrays,
    ScoredAnswer,
    ScoreFormat,
    bootstrap_intervals,
    corpus_bleu,
    group_scores,
    is_yes_no,
    normalize_answer,
    official_text,
    paired_bootstrap,
    parse_score_format,
    score_answer,
    scored_texts,
    sentence_bleu,
)

REF, HYP = "put the cup on the table", "put cup on table"
#: Worked out by hand above (not by the module, not by sacrebleu).
BY_HAND = {1: 60.653066, 2: 35.018064, 3: 26.492667, 4: 23.043182}


def _sacrebleu_sentence(prediction: str, reference: str, order: int) -> float:
    if order == 4:  # sacrebleu's own functional API, all defaults: effective order on for sentences
        return sacrebleu.sentence_bleu(prediction, [reference]).score
    return (
        BLEU(max_ngram_order=order, effective_order=True, smooth_method="exp", tokenize="13a")
        .sentence_score(prediction, [reference])
        .score
    )


def _sacrebleu_corpus(predictions: list[str], references: list[str], order: int) -> float:
    if order == 4:  # all defaults: no effective order for a corpus
        return sacrebleu.corpus_bleu(predictions, [references]).score
    return (
        BLEU(max_ngram_order=order, effective_order=False, smooth_method="exp", tokenize="13a")
        .corpus_score(predictions, [references])
        .score
    )


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_sentence_and_corpus_bleu_of_one_pair_match_the_hand_figures(order):
    assert sentence_bleu(HYP, REF, order) == pytest.approx(BY_HAND[order], abs=1e-5)
    assert corpus_bleu([HYP], [REF], order) == pytest.approx(BY_HAND[order], abs=1e-5)


def test_the_default_order_is_bleu_4():
    assert sentence_bleu(HYP, REF) == pytest.approx(BY_HAND[4], abs=1e-5)
    assert corpus_bleu([HYP], [REF]) == pytest.approx(BY_HAND[4], abs=1e-5)


PAIRS = [
    (HYP, REF),
    (REF, REF),
    ("yes", "yes"),
    ("no", "yes"),
    ("Yes", "yes"),  # BLEU is case-sensitive: no match
    ("Yes.", "yes"),  # 13a splits the full stop off: 0 of 2 tokens match
    ("yes please", "yes"),
    ("", "yes"),  # empty prediction
    ("the cup", "put the cup on the table"),
    ("slide the tray < 10 cm to the right", "slide the tray < 10 cm to the left"),
    ("1- pick up the sanitizer 2- done", "1- pick up the sanitizer 2- put book on the table 3- done"),
]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_sentence_bleu_equals_sacrebleu_called_directly(prediction, reference, order):
    assert sentence_bleu(prediction, reference, order) == pytest.approx(
        _sacrebleu_sentence(prediction, reference, order), abs=1e-9
    )


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_corpus_bleu_equals_sacrebleu_called_directly(order):
    predictions, references = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    expected = _sacrebleu_corpus(predictions, references, order)
    assert corpus_bleu(predictions, references, order) == pytest.approx(expected, abs=1e-9)
    # Pooled counts, not a mean of sentence scores (which sacrebleu's corpus score is not either).
    mean_sentence = sum(_sacrebleu_sentence(p, r, order) for p, r in PAIRS) / len(PAIRS)
    assert expected != pytest.approx(mean_sentence, abs=1e-3)


def test_one_word_and_empty_answers_by_hand():
    # "yes" has no 2-, 3- or 4-grams: sentence BLEU with effective order uses order 1 only (1/1 → 100).
    for order in (1, 2, 3, 4):
        assert sentence_bleu("yes", "yes", order) == pytest.approx(100.0, abs=1e-9)
    # Corpus BLEU-n has no effective order: a single one-word answer has no 2-gram counts at all → 0,
    # while its corpus BLEU-1 is 100.
    assert corpus_bleu(["yes"], ["yes"], 4) == 0.0
    assert corpus_bleu(["yes"], ["yes"], 2) == 0.0
    assert corpus_bleu(["yes"], ["yes"], 1) == pytest.approx(100.0, abs=1e-9)
    # Wrong word, wrong case, or punctuation as a token of its own: no 1-gram matches → 0.
    assert sentence_bleu("no", "yes") == 0.0
    assert sentence_bleu("Yes", "yes") == 0.0
    assert sentence_bleu("Yes.", "yes") == 0.0
    # "yes please" vs "yes": p1 = 1/2, p2 = 0/1 → smoothed 1/(2·1) = 1/2, no 3-grams (effective order 2),
    # hypothesis longer than the reference → BP = 1: BLEU = (1/2 · 1/2) ** (1/2) = 50.
    assert sentence_bleu("yes please", "yes") == pytest.approx(50.0, abs=1e-9)
    assert sentence_bleu("yes please", "yes", 1) == pytest.approx(50.0, abs=1e-9)
    # Empty prediction: nothing to match.
    for order in (1, 2, 3, 4):
        assert sentence_bleu("", "yes", order) == 0.0
        assert sentence_bleu("", REF, order) == 0.0
    assert corpus_bleu([""], ["yes"], 1) == 0.0


def test_corpus_bleu_pools_counts_over_answers_by_hand():
    # Pooled over both pairs: 1-grams 5/5, 2-grams 1/3, 3-grams 0/2, 4-grams 0/1; lengths 5 vs 7:
    # BP = exp(1 - 7/5) = 0.6703200.
    hyps, refs = [HYP, "yes"], [REF, "yes"]
    assert corpus_bleu(hyps, refs, 1) == pytest.approx(67.032005, abs=1e-5)  # 100 · BP
    assert corpus_bleu(hyps, refs, 2) == pytest.approx(38.700946, abs=1e-5)  # · (1/3) ** (1/2)
    assert corpus_bleu(hyps, refs, 4) == pytest.approx(25.466655, abs=1e-5)  # · (1/3 · 1/4 · 1/4) ** (1/4)
    assert corpus_bleu([], [], 4) is None
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [], 1)


def test_normalisation_and_yes_no():
    assert normalize_answer("  Yes. ") == "yes"
    assert normalize_answer("Put the cup, on the TABLE!") == "put the cup on the table"
    assert normalize_answer("slide the tray < 10 cm") == "slide the tray < 10 cm"  # '<' is a symbol, not punctuation
    assert normalize_answer("«Oui»\t—\n  non…") == "oui non"  # Unicode punctuation, any whitespace
    assert normalize_answer("") == "" and normalize_answer(" ?! ") == ""
    for yes_no in ("yes", "No!", "YES", " no. ", "Yes,"):
        assert is_yes_no(yes_no), yes_no
    for other in ("not sure", "yes please", "", "yesno", "y", "nope"):
        assert not is_yes_no(other), other


def test_answer_scores_by_hand():
    scores = score_answer("Yes.", "yes")
    assert scores.exact_match is True and scores.yes_no_correct is True
    assert scores.bleu == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}  # case and the full stop count for BLEU
    scores = score_answer(HYP, REF)
    assert scores.exact_match is False and scores.yes_no_correct is None
    assert scores.bleu == pytest.approx(BY_HAND, abs=1e-5)
    assert score_answer("no", "Yes").yes_no_correct is False
    assert score_answer("yes please", "yes").yes_no_correct is False  # not the same answer
    # n-gram counts: hypothesis length 0, reference length 1, no matches, no hypothesis n-grams.
    assert score_answer("", "no").as_dict() == {
        "bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0, "exact_match": False, "yes_no_correct": False,
        "ngrams": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    }  # fmt: skip
    # HYP against REF, by hand (module docstring): lengths 4 and 6, matches 4 1 0 0 of 4 3 2 1 n-grams.
    assert score_answer(HYP, REF).ngrams == (4, 6, 4, 1, 0, 0, 4, 3, 2, 1)
    assert score_answer("Put the cup on the table!", REF).exact_match is True


def test_group_scores_by_hand():
    pairs = [("Yes.", "yes"), ("yes", "no"), ("No", "no"), (HYP, REF), (REF, REF)]
    scored = [ScoredAnswer(p, r, score_answer(p, r)) for p, r in pairs]
    assert [s.scores.yes_no_correct for s in scored] == [True, False, True, None, None]
    assert [s.scores.exact_match for s in scored] == [True, False, True, False, True]
    group = group_scores(scored)
    assert group["answers"] == 5 and group["yes_no_count"] == 3
    assert group["yes_no_accuracy"] == pytest.approx(2 / 3)
    assert group["exact_match"] == pytest.approx(3 / 5)
    # Mean sentence BLEU: only HYP (by hand above) and REF (100) score; the three short answers score 0
    # (case-sensitive "Yes."/"No", wrong "yes").
    assert group["sentence_bleu2"] == pytest.approx((35.018064 + 100) / 5, abs=1e-5)
    assert group["sentence_bleu4"] == pytest.approx((23.043182 + 100) / 5, abs=1e-5)
    # Corpus BLEU, pooled: hypothesis tokens "Yes" "." | "yes" | "No" | 4 | 6 = 14, reference tokens 15,
    # BP = exp(1 - 15/14); matched 1-grams 0+0+0+4+6 = 10/14, 2-grams 0+1+5 = 6/9, 3-grams 0+4 = 4/6,
    # 4-grams 0+3 = 3/4 (no zero count: no smoothing).
    assert group["bleu1"] == pytest.approx(66.504484, abs=1e-5)  # 100 · BP · 10/14
    assert group["bleu2"] == pytest.approx(64.249436, abs=1e-5)  # · (10/14 · 6/9) ** (1/2)
    assert group["bleu3"] == pytest.approx(63.514875, abs=1e-5)
    assert group["bleu4"] == pytest.approx(65.037920, abs=1e-5)
    empty = group_scores([])
    assert empty["answers"] == 0 and empty["bleu4"] is None and empty["yes_no_accuracy"] is None
    assert empty["sentence_bleu1"] is None and empty["exact_match"] is None and empty["yes_no_count"] == 0


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_answer_bleu_from_its_ngram_counts_equals_sacrebleu(prediction, reference):
    scores = score_answer(prediction, reference)
    for order in (1, 2, 3, 4):
        assert scores.bleu[order] == pytest.approx(_sacrebleu_sentence(prediction, reference, order), abs=1e-9)


# --- the yes/no case: corpus BLEU-2..4 say nothing about one-word answers ---------------------------------


def test_perfect_yes_no_answers_score_bleu1_100_bleu2_to_4_0_sentence_bleu4_100_accuracy_1():
    pairs = [("yes", "yes"), ("no", "no"), ("yes", "yes"), ("no", "no")]
    group = group_scores([ScoredAnswer(p, r, score_answer(p, r)) for p, r in pairs])
    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
    # sacrebleu itself: 4/4 unigrams match, there is no 2-gram at all.
    assert sacrebleu.corpus_bleu(predictions, [references]).score == 0.0
    assert _sacrebleu_corpus(predictions, references, 1) == pytest.approx(100.0)
    assert group["bleu1"] == pytest.approx(100.0)
    assert group["bleu2"] == group["bleu3"] == group["bleu4"] == 0.0
    assert group["sentence_bleu4"] == pytest.approx(100.0) and group["sentence_bleu1"] == pytest.approx(100.0)
    assert group["yes_no_accuracy"] == 1.0 and group["exact_match"] == 1.0 and group["yes_no_count"] == 4


# --- score formats -------------------------------------------------------------------------------------


def test_official_format_scores_the_targets_with_their_answer_marker():
    assert official_text("yes") == "A: yes" and official_text("  A: yes ") == "A: yes" and official_text("a:no") == "a:no"
    assert official_text("") == "A:"
    assert scored_texts("no", "yes", "official") == ("A: no", "A: yes") and scored_texts("no", "yes") == ("no", "yes")
    # A wrong yes/no answer: 0 in the clean format; in the official one 13a makes "A : no" against
    # "A : yes": p1 = 2/3, p2 = 1/2, p3 = 0/1 smoothed to 1/2, no 4-grams (effective order 3), BP = 1:
    # (2/3 · 1/2 · 1/2) ** (1/3) · 100 = 55.032121.
    official = sacrebleu.sentence_bleu("A: no", ["A: yes"]).score
    assert official == pytest.approx(55.032121, abs=1e-6)
    assert score_answer("no", "yes", ScoreFormat.OFFICIAL).bleu[4] == pytest.approx(official, abs=1e-9)
    assert score_answer("no", "yes", "clean").bleu[4] == sacrebleu.sentence_bleu("no", ["yes"]).score == 0.0
    # A free-form pair: both formats by sacrebleu directly, and they differ.
    clean = score_answer(HYP, REF, "clean").bleu[4]
    marked = score_answer(HYP, REF, "official").bleu[4]
    assert clean == pytest.approx(sacrebleu.sentence_bleu(HYP, [REF]).score, abs=1e-9)
    assert marked == pytest.approx(sacrebleu.sentence_bleu(f"A: {HYP}", [f"A: {REF}"]).score, abs=1e-9)
    assert marked != pytest.approx(clean, abs=1.0)
    # Exact match and yes/no accuracy compare the answers alone, in both formats.
    for score_format in ScoreFormat:
        assert score_answer("no", "yes", score_format).yes_no_correct is False
        assert score_answer("Yes.", "yes", score_format).exact_match is True
    # Corpus BLEU of a group in the official format: sacrebleu on the marked texts.
    hyps, refs = [HYP, "yes", "no"], [REF, "yes", "yes"]
    group = group_scores([ScoredAnswer(h, r, score_answer(h, r, "official")) for h, r in zip(hyps, refs, strict=True)])
    for order in (1, 2, 3, 4):
        expected = _sacrebleu_corpus([f"A: {h}" for h in hyps], [f"A: {r}" for r in refs], order)
        assert group[f"bleu{order}"] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ConfigError, match="score format must be one of clean, official"):
        parse_score_format("paper")


# --- bootstrap intervals -------------------------------------------------------------------------------


def _percentile_interval(values):
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def test_corpus_bleu_interval_resamples_sentence_pairs_and_recomputes_with_sacrebleu():
    rng = random.Random(3)
    words = ["put", "the", "cup", "on", "table", "pick", "up", "sanitizer", "book", "drawer"]
    pairs = [(" ".join(rng.choices(words, k=rng.randint(1, 7))), " ".join(rng.choices(words, k=rng.randint(1, 7)))) for _ in range(30)]
    scores = [score_answer(p, r) for p, r in pairs]
    intervals = bootstrap_intervals(scores, resamples=200, seed=11)
    # Independently: draw the resamples, and let sacrebleu score each resampled corpus from its texts.
    draws = np.random.default_rng(11).integers(0, len(pairs), size=(200, len(pairs)))
    for order in (1, 4):
        values = [_sacrebleu_corpus([pairs[i][0] for i in row], [pairs[i][1] for i in row], order) for row in draws]
        assert intervals[f"bleu{order}"] == pytest.approx(_percentile_interval(values), abs=1e-9)
    sentence = np.array([_sacrebleu_sentence(p, r, 4) for p, r in pairs])
    assert intervals["sentence_bleu4"] == pytest.approx(_percentile_interval(sentence[draws].mean(axis=1)), abs=1e-9)
    # The point estimate lies inside its interval.
    group = group_scores([ScoredAnswer(p, r, s) for (p, r), s in zip(pairs, scores, strict=True)])
    for metric in ("bleu1", "bleu4", "sentence_bleu4", "exact_match"):
        low, high = intervals[metric]
        assert low <= group[metric] <= high, metric


def test_accuracy_interval_matches_the_binomial_spread_and_is_seeded():
    # 60 of 100 yes/no answers right: the 95% interval of a proportion is about 0.6 ± 1.96·√(0.6·0.4/100) = ± 0.096.
    scores = [score_answer("yes", "yes")] * 60 + [score_answer("no", "yes")] * 40
    intervals = bootstrap_intervals(scores)
    low, high = intervals["yes_no_accuracy"]
    assert low == pytest.approx(0.6 - 0.096, abs=0.02) and high == pytest.approx(0.6 + 0.096, abs=0.02)
    assert bootstrap_intervals(scores) == intervals  # seeded: the same again
    assert bootstrap_intervals(scores, seed=1)["yes_no_accuracy"] != intervals["yes_no_accuracy"]
    # Free-form answers only: no yes/no accuracy, hence no interval for it; an empty group has none at all.
    assert bootstrap_intervals([score_answer(HYP, REF)] * 3)["yes_no_accuracy"] is None
    assert set(bootstrap_intervals([]).values()) == {None}


def test_paired_bootstrap_of_a_difference_on_the_same_questions():
    # 40 yes/no QAs; the second system answers 10 more right: difference 0.25, and the per-QA differences
    # are 1 on 10 QAs, 0 elsewhere: sd of their mean √(0.25·0.75/40) = 0.0685 → 0.25 ± 0.134.
    first = [score_answer("yes", "yes")] * 20 + [score_answer("no", "yes")] * 20
    second = [score_answer("yes", "yes")] * 30 + [score_answer("no", "yes")] * 10
    interval = paired_bootstrap(ScoreArrays.of(first), ScoreArrays.of(second))["yes_no_accuracy"]
    assert interval[0] == pytest.approx(0.25 - 0.134, abs=0.03) and interval[1] == pytest.approx(0.25 + 0.134, abs=0.03)
    assert paired_bootstrap(ScoreArrays.of(first), ScoreArrays.of(first))["sentence_bleu4"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same QAs"):
        paired_bootstrap(ScoreArrays.of(first), ScoreArrays.of(second[:-1]))
