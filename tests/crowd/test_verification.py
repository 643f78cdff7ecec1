"""Verification votes weighted by worker reliability (crowd.aggregation.verification)."""
from __future__ import annotations

import numpy as np
import pytest

from crowd.aggregation import majority_vote
from crowd.aggregation.verification import log_odds_weights, verify
from tests.crowd.aggregation_data import one_coin, synthetic_crowd


def test_equal_accuracies_reduce_to_majority():
    items = [0, 0, 0, 1, 1, 1]
    r = verify(items, [0, 1, 2, 0, 1, 2], [1, 1, 0, 0, 0, 1])
    assert r.accept.tolist() == [True, False]
    w = np.log(3)  # default accuracy 0.75
    assert r.p_good[0] == pytest.approx(1 / (1 + np.exp(-w)))
    assert r.confidence[1] == pytest.approx(r.p_good[0])
    assert r.n_votes.tolist() == [3, 3] and r.n_yes.tolist() == [2, 1]


def test_a_reliable_worker_outweighs_two_sloppy_ones():
    acc = np.array([0.98, 0.6, 0.6])
    r = verify([0, 0, 0], [0, 1, 2], [1, 0, 0], worker_accuracy=acc)
    assert r.accept.tolist() == [True]
    expected = log_odds_weights(acc) @ np.array([1, -1, -1])
    assert r.p_good[0] == pytest.approx(1 / (1 + np.exp(-expected)))


def test_a_reliably_wrong_worker_counts_the_other_way():
    r = verify([0], [0], [1], worker_accuracy=[0.1])
    assert not r.accept[0] and r.p_good[0] == pytest.approx(0.1)


def test_tie_rejects_and_no_votes_reject():
    r = verify([0, 0, 2], [0, 1, 0], [1, 0, 1], n_items=3)
    assert r.p_good[0] == pytest.approx(0.5) and not r.accept[0]
    assert not r.accept[1] and r.p_good[1] == 0.5 and r.n_votes[1] == 0
    assert r.accept[2]


def test_prior_and_threshold_shift_the_decision():
    assert not verify([0], [0], [1], prior_good=0.1).accept[0]  # 0.1 -> 0.25
    assert verify([0], [0], [1], threshold=0.7).accept[0]  # 0.75 > 0.7
    assert not verify([0], [0], [1], threshold=0.8).accept[0]


def test_unknown_workers_get_the_default():
    r = verify([0, 0], [0, 1], [1, 0], worker_accuracy=[np.nan, 0.9], default_accuracy=0.6)
    assert not r.accept[0]
    assert r.p_good[0] == pytest.approx(1 / (1 + np.exp(-(np.log(0.6 / 0.4) - np.log(9)))))


def test_weighted_beats_plain_majority_with_known_accuracies():
    acc = np.array([0.95, 0.55, 0.55, 0.55, 0.55])
    items, workers, votes, truth = synthetic_crowd(one_coin(acc), 4000, seed=11)
    weighted = verify(items, workers, votes, worker_accuracy=acc)
    plain = majority_vote(items, workers, votes)
    assert np.mean(weighted.accept == truth) > np.mean(plain.labels == truth) + 0.05


def test_bad_input():
    with pytest.raises(ValueError, match="no votes"):
        verify([], [], [])
    with pytest.raises(ValueError, match="unknown label"):
        verify([0], [0], [2])
    with pytest.raises(ValueError, match="one entry per worker"):
        verify([0, 0], [0, 1], [1, 1], worker_accuracy=[0.9])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        verify([0], [0], [1], worker_accuracy=[1.5])
    with pytest.raises(ValueError, match="prior_good"):
        verify([0], [0], [1], prior_good=1.0)
