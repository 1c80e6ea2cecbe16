"""BLEU, exact match and yes/no accuracy against values worked out by hand from n-gram counts.

Reference "put the cup on the table" (6 tokens), hypothesis "put cup on table" (4 tokens):
  matched n-grams / hypothesis n-grams: 1-grams 4/4, 2-grams 1/3 ("cup on"), 3-grams 0/2, 4-grams 0/1
  brevity penalty BP = exp(1 - 6/4) = exp(-0.5) = 0.6065307
  sacrebleu's default smoothing ("exp") replaces the k-th zero precision by 1 / (2^k * total):
  p3 = 1 / (2 * 2) = 0.25, p4 = 1 / (4 * 1) = 0.25
  BLEU-1 = BP * 1                             = 0.6065307 -> 60.65307
  BLEU-2 = BP * (1 * 1/3) ** (1/2)            = 0.6065307 * 0.5773503 = 0.3501806 -> 35.01806
  BLEU-3 = BP * (1 * 1/3 * 0.25) ** (1/3)     = 0.6065307 * 0.4367902 = 0.2649267 -> 26.49267
  BLEU-4 = BP * (1 * 1/3 * 0.25 * 0.25) ** (1/4) = 0.6065307 * 0.3799178 = 0.2304318 -> 23.04318
"""

import math

import pytest

from vlmft_cli.evaluate.scoring import (
    ScoredAnswer,
    corpus_bleu,
    group_scores,
    is_yes_no,
    normalize_answer,
    score_answer,
    sentence_bleu,
)

REF, HYP = "put the cup on the table", "put cup on table"
BP = math.exp(1 - 6 / 4)
BY_HAND = {
    1: 100 * BP,
    2: 100 * BP * (1 * (1 / 3)) ** (1 / 2),
    3: 100 * BP * (1 * (1 / 3) * 0.25) ** (1 / 3),
    4: 100 * BP * (1 * (1 / 3) * 0.25 * 0.25) ** (1 / 4),
}


def test_hand_arithmetic_matches_the_rounded_figures():
    assert [round(BY_HAND[n], 4) for n in (1, 2, 3, 4)] == [60.6531, 35.0181, 26.4927, 23.0432]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_sentence_and_corpus_bleu_of_one_pair(order):
    assert sentence_bleu(HYP, REF, order) == pytest.approx(BY_HAND[order], abs=1e-6)
    assert corpus_bleu([HYP], [REF], order) == pytest.approx(BY_HAND[order], abs=1e-6)


def test_effective_order_gives_a_correct_one_word_answer_full_marks():
    # "yes" has no 2-, 3- or 4-grams: sentence BLEU uses order 1 only (100); corpus BLEU-4 of this
    # single answer has no 2-gram counts at all and is 0, while its corpus BLEU-1 is 100.
    assert sentence_bleu("yes", "yes") == pytest.approx(100.0)
    assert corpus_bleu(["yes"], ["yes"], 4) == 0.0
    assert corpus_bleu(["yes"], ["yes"], 1) == pytest.approx(100.0)
    assert sentence_bleu("no", "yes") == 0.0
    assert sentence_bleu("", "yes") == 0.0


def test_corpus_bleu_pools_counts_over_answers():
    # Pooled over both pairs: 1-grams 5/5, 2-grams 1/3, 3-grams 0/2, 4-grams 0/1; lengths 5 vs 7.
    bp = math.exp(1 - 7 / 5)  # 0.6703200
    hyps, refs = [HYP, "yes"], [REF, "yes"]
    assert corpus_bleu(hyps, refs, 1) == pytest.approx(100 * bp, abs=1e-6)  # 67.03200
    assert corpus_bleu(hyps, refs, 2) == pytest.approx(100 * bp * (1 / 3) ** 0.5, abs=1e-6)  # 38.70095
    assert corpus_bleu(hyps, refs, 4) == pytest.approx(100 * bp * (1 / 3 * 0.25 * 0.25) ** 0.25, abs=1e-6)  # 25.46665
    assert corpus_bleu([], [], 4) is None
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [], 1)


def test_normalisation_and_yes_no():
    assert normalize_answer("  Yes. ") == "yes"
    assert normalize_answer("Put the cup, on the TABLE!") == "put the cup on the table"
    assert normalize_answer("slide the tray < 10 cm") == "slide the tray < 10 cm"  # '<' is a symbol, not punctuation
    assert is_yes_no("No!") and is_yes_no("YES") and not is_yes_no("not sure") and not is_yes_no("yes please")


def test_answer_scores_and_group_scores():
    pairs = [("Yes.", "yes"), ("yes", "no"), ("No", "no"), (HYP, REF), (REF, REF)]
    scored = [ScoredAnswer(p, r, score_answer(p, r)) for p, r in pairs]
    assert [s.scores.yes_no_correct for s in scored] == [True, False, True, None, None]
    assert [s.scores.exact_match for s in scored] == [True, False, True, False, True]
    assert scored[3].scores.bleu[2] == pytest.approx(BY_HAND[2], abs=1e-6)
    assert scored[4].scores.as_dict()["bleu4"] == pytest.approx(100.0)
    group = group_scores(scored)
    assert group["answers"] == 5 and group["yes_no_count"] == 3
    assert group["yes_no_accuracy"] == pytest.approx(2 / 3)
    assert group["exact_match"] == pytest.approx(3 / 5)
    assert group["sentence_bleu2"] == pytest.approx(sum(s.scores.bleu[2] for s in scored) / 5)
    assert group["bleu1"] == pytest.approx(corpus_bleu([p for p, _ in pairs], [r for _, r in pairs], 1))
    empty = group_scores([])
    assert empty["answers"] == 0 and empty["bleu4"] is None and empty["yes_no_accuracy"] is None
