"""Adaptive redundancy (crowd.aggregation.adaptive): when does an item need another answer?"""
from __future__ import annotations

import numpy as np
import pytest

from crowd.aggregation import dawid_skene
from tests.crowd.aggregation_data import one_coin, synthetic_crowd
from crowd.aggregation.adaptive import (
    MORE_MIN, MORE_UNSURE, STOP_CAP, STOP_CONFIDENT, item_needs_answer, item_posterior, needs_more,
    sprt_threshold,
)


def test_two_agreeing_good_workers_are_enough():
    d = item_needs_answer([1, 1], [0.9, 0.9], 2)
    assert not d.need_more and d.label == 1 and d.reason == "confident"
    assert d.posterior[1] == pytest.approx(81 / 82)


def test_a_split_needs_more_and_one_answer_is_not_enough():
    assert item_needs_answer([1, 0], [0.9, 0.9], 2).need_more
    assert item_needs_answer([1], [0.9], 2).need_more  # 0.9 < 0.95
    assert not item_needs_answer([1], [0.99], 2).need_more


def test_min_and_max_votes():
    d = item_needs_answer([], [], 3)
    assert d.need_more and d.label == -1 and d.reason == "below min_votes"
    assert np.allclose(d.posterior, 1 / 3)
    assert item_needs_answer([1, 1], [0.9, 0.9], 2, min_votes=3).reason == "below min_votes"
    capped = item_needs_answer([0, 1, 0, 1], [0.7] * 4, 2, max_votes=4)
    assert not capped.need_more and capped.reason == "reached max_votes"


def test_posterior_uses_accuracy_and_classes():
    p = item_posterior([2, 2, 0], [0.8, 0.8, 0.8], 3)
    # each vote: 0.8 for its class, 0.1 for each other
    expected = np.array([0.8 * 0.1 * 0.1, 0.1 * 0.1 * 0.1, 0.1 * 0.8 * 0.8])
    assert np.allclose(p, expected / expected.sum())
    skewed = item_posterior([1], [0.9], 2, prior=[0.99, 0.01])
    assert skewed[0] > 0.9
    with pytest.raises(ValueError, match="outside"):
        item_posterior([3], [0.9], 3)
    with pytest.raises(ValueError, match="one accuracy per vote"):
        item_posterior([1, 1], [0.9], 2)


def test_sprt_threshold_is_the_posterior_rule():
    assert sprt_threshold(0.05) == pytest.approx(0.95)
    # SPRT: stop once the log-likelihood ratio passes log((1 - beta) / alpha)
    t = sprt_threshold(0.01, 0.1)
    llr = np.log(0.9 / 0.01)
    assert t == pytest.approx(1 / (1 + np.exp(-llr)))


def test_batch_rule_with_dawid_skene_posteriors():
    post = np.array([[0.97, 0.03], [0.6, 0.4], [0.5, 0.5], [0.99, 0.01]])
    more, why = needs_more(post, np.array([3, 3, 10, 0]), max_votes=10, with_reasons=True)
    assert more.tolist() == [False, True, False, True]
    assert why.tolist() == [STOP_CONFIDENT, MORE_UNSURE, STOP_CAP, MORE_MIN]
    items, workers, labels, _ = synthetic_crowd(one_coin([0.8, 0.8, 0.8]), 500, seed=2)
    ds = dawid_skene(items, workers, labels)
    more = needs_more(ds.posteriors, ds.n_votes)
    unanimous = np.bincount(items, weights=labels, minlength=500) % 3 == 0
    assert more.tolist() == (ds.confidence < 0.95).tolist()
    assert more[~unanimous].all() and not more[unanimous].any()
    with pytest.raises(ValueError, match="threshold"):
        needs_more(post, np.zeros(4), threshold=1.0)
    with pytest.raises(ValueError, match="min_votes"):
        needs_more(post, np.zeros(4), min_votes=5, max_votes=3)


def test_adaptive_saves_answers_at_the_same_accuracy():
    """Simulated crowd of accuracy 0.85: ask one at a time until confident (cap 9), compare with
    a fixed 9 answers per item."""
    rng = np.random.default_rng(0)
    n, cap = 2000, 9
    truth = rng.integers(0, 2, n)
    answers = np.where(rng.random((n, cap)) < 0.85, truth[:, None], 1 - truth[:, None])
    used = np.zeros(n, dtype=int)
    labels = np.zeros(n, dtype=int)
    for i in range(n):
        k = 1
        while item_needs_answer(answers[i, :k], [0.85] * k, 2, max_votes=cap).need_more:
            k += 1
        used[i] = k
        labels[i] = item_needs_answer(answers[i, :k], [0.85] * k, 2, max_votes=cap).label
    fixed = (answers.sum(axis=1) > cap / 2).astype(int)
    assert used.mean() < 0.5 * cap
    assert np.mean(labels == truth) > np.mean(fixed == truth) - 0.03
    assert np.mean(labels == truth) > 0.95
