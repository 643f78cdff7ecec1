"""Worker quality (crowd.aggregation.quality): gold accuracy, DS skill, approve/reject/block."""
from __future__ import annotations

import numpy as np
import pytest

from crowd.aggregation import dawid_skene
from crowd.aggregation.quality import (
    APPROVE, BLOCK, REJECT, decide, gold_accuracy, score_gold, skill_from_confusion,
)
from tests.crowd.aggregation_data import one_coin, synthetic_crowd


def test_beta_prior_smooths_gold_accuracy():
    # worker 0: 1 of 1 right; worker 1: 0 of 1; worker 2: 18 of 20; worker 3: no gold
    workers = [0, 1] + [2] * 20
    correct = [1, 0] + [1] * 18 + [0] * 2
    s = gold_accuracy(workers, correct, n_workers=4)
    assert s.accuracy.tolist() == pytest.approx([5 / 6, 4 / 6, 22 / 25, 4 / 5])
    assert s.n_gold.tolist() == [1, 1, 20, 0] and s.n_correct.tolist() == [1, 0, 18, 0]
    lo, hi = s.bound()
    assert np.all(lo <= s.accuracy) and np.all(s.accuracy <= hi)
    assert (hi - lo)[2] < (hi - lo)[0]  # more gold, narrower
    flat = gold_accuracy(workers, correct, prior_correct=1, prior_wrong=1)
    assert flat.accuracy[0] == pytest.approx(2 / 3)


def test_score_gold_marks_votes_on_gold_items():
    on_gold, correct = score_gold([0, 1, 2, 2], [0, 0, 1, 2], [1, 0, 1, 0], gold_items=[2, 0], gold_labels=[1, 1])
    assert on_gold.tolist() == [True, False, True, True]
    assert correct.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="twice"):
        score_gold([0], [0], [0], gold_items=[0, 0], gold_labels=[1, 1])


def test_gold_accuracy_finds_the_true_accuracy():
    acc = np.array([0.95, 0.8, 0.55, 0.3])
    items, workers, labels, truth = synthetic_crowd(one_coin(acc), 500, seed=4)
    gold = np.arange(0, 500, 5)  # every fifth item is gold
    on_gold, correct = score_gold(items, workers, labels, gold, truth[gold])
    s = gold_accuracy(workers[on_gold], correct[on_gold])
    assert np.abs(s.accuracy - acc).max() < 0.08


def test_skill_from_dawid_skene_matches_the_true_accuracy():
    acc = np.array([0.9, 0.75, 0.6, 0.85, 0.7])
    items, workers, labels, _ = synthetic_crowd(one_coin(acc), 3000, seed=6)
    ds = dawid_skene(items, workers, labels)
    skill = skill_from_confusion(ds.confusion, ds.priors)
    assert np.abs(skill - acc).max() < 0.03
    assert np.allclose(skill, ds.worker_skill)
    with pytest.raises(ValueError, match="confusion must be"):
        skill_from_confusion(np.ones((2, 2, 3)), np.ones(2))


def test_decide_approve_reject_block():
    # worker 0: great; 1: mediocre with plenty of gold; 2: bad with plenty; 3: bad but only 2 gold
    workers = [0] * 20 + [1] * 30 + [2] * 30 + [3] * 2
    correct = [1] * 19 + [0] + [1] * 16 + [0] * 14 + [1] * 6 + [0] * 24 + [0, 0]
    s = gold_accuracy(workers, correct)
    d = decide(s)
    assert d.code.tolist() == [APPROVE, REJECT, BLOCK, APPROVE]
    assert d.names.tolist() == ["approve", "reject", "block", "approve"]
    assert decide(s, min_gold=1).code[3] == REJECT  # 4/7 = 0.57, too little evidence to block
    with pytest.raises(ValueError, match="block_below"):
        decide(s, reject_below=0.4, block_below=0.5)
