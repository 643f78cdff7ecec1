"""Speed-ups must not change what aggregation computes (issue #6).

Dawid-Skene and the string encoding are vectorised for speed; these tests hold them to a plain
reference written for reading, not speed (loops over votes), and to the results recorded on the
shared MTurk sets before the speed-ups. A later change that moves a label, an iteration count or
the log-likelihood fails here, whatever it does to the accuracy.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from crowd.aggregation import dawid_skene, encode, read_votes
from crowd.aggregation.categorical import _Votes
from tests.crowd.aggregation_data import REAL_SETS, real_set


def reference_dawid_skene(items, workers, labels, n_items, n_workers, K, *, max_iter=100, tol=1e-5,
                          prior_correct=1.0, smoothing=0.0, init=None, gold=None):
    """Dawid-Skene as the docstring of :func:`dawid_skene` states it, one vote at a time."""
    counts = np.zeros((n_items, K))
    for i, lab in zip(items, labels):
        counts[i, lab] += 1
    start = counts if init is None else np.asarray(init, dtype=float)
    post = np.full((n_items, K), 1.0 / K)
    for i in range(n_items):
        if start[i].sum() > 0:
            post[i] = start[i] / start[i].sum()
    voted = np.zeros(n_items, dtype=bool)
    voted[items] = True

    def pin(p):
        if gold is not None:
            for i, k in zip(*gold):
                p[i] = 0.0
                p[i, k] = 1.0
        return p

    post = pin(post)
    history, converged, it = [], False, 0
    for it in range(1, max_iter + 1):
        prior = np.maximum(post[voted].mean(axis=0), 1e-10)
        said = np.zeros((n_workers, K, K))  # [w, said l, true k]
        for i, w, lab in zip(items, workers, labels):
            said[w, lab] += post[i]
        said = np.maximum(said + smoothing + prior_correct * np.eye(K), 1e-10)
        confusion = said / said.sum(axis=1, keepdims=True)
        log_joint = np.tile(np.log(prior), (n_items, 1))
        for i, w, lab in zip(items, workers, labels):
            log_joint[i] += np.log(confusion[w, lab])
        top = log_joint.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(log_joint - top).sum(axis=1)) + top[:, 0]
        post = pin(np.exp(log_joint - log_norm[:, None]))
        ll = log_norm[voted].sum() / len(items)
        done = bool(history) and ll - history[-1] < tol
        history.append(ll)
        if done:
            converged = True
            break
    labels_out = np.where(voted, np.argmax(post, axis=1), -1)
    post = np.where(voted[:, None], post, prior / prior.sum())
    return labels_out, post, np.transpose(confusion, (0, 2, 1)), prior / prior.sum(), it, converged, history


def random_votes(seed, n_items=60, n_workers=9, K=3, n_votes=400):
    """Random votes with repeats of the same (item, worker), workers with a bias, and items
    without votes at the end (``n_items`` is larger than the highest item voted on)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, K, n_items)
    items = rng.integers(0, n_items - 5, n_votes)
    workers = rng.integers(0, n_workers, n_votes)
    right = rng.random(n_votes) < rng.uniform(0.4, 0.9, n_workers)[workers]
    labels = np.where(right, truth[items], rng.integers(0, K, n_votes))
    return items, workers, labels, n_items, n_workers, K


@pytest.mark.parametrize("seed,K,kwargs", [
    (0, 3, {}),
    (1, 2, {}),
    (2, 4, {"prior_correct": 0.0}),
    (3, 3, {"smoothing": 0.5, "prior_correct": 2.0}),
    (4, 3, {"max_iter": 3, "tol": -np.inf}),
])
def test_dawid_skene_is_the_reference_em(seed, K, kwargs):
    items, workers, labels, n_items, n_workers, K = random_votes(seed, K=K)
    ours = dawid_skene(items, workers, labels, n_items=n_items, n_workers=n_workers, n_classes=K, **kwargs)
    ref_labels, ref_post, ref_conf, ref_prior, ref_iter, ref_conv, ref_hist = reference_dawid_skene(
        items, workers, labels, n_items, n_workers, K, **kwargs)
    assert ours.n_iter == ref_iter and ours.converged == ref_conv
    np.testing.assert_array_equal(ours.labels, ref_labels)
    np.testing.assert_allclose(ours.posteriors, ref_post, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.confusion, ref_conf, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.priors, ref_prior, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.log_likelihood, ref_hist, rtol=0, atol=1e-12)


def test_dawid_skene_with_gold_and_a_start_is_the_reference_em():
    items, workers, labels, n_items, n_workers, K = random_votes(5)
    rng = np.random.default_rng(5)
    init = rng.random((n_items, K))
    gold = (np.array([0, 3, 7]), np.array([2, 0, 1]))
    ours = dawid_skene(items, workers, labels, n_items=n_items, n_workers=n_workers, n_classes=K, init=init,
                       gold_items=gold[0], gold_labels=gold[1])
    ref_labels, ref_post, _, _, ref_iter, _, ref_hist = reference_dawid_skene(
        items, workers, labels, n_items, n_workers, K, init=init, gold=gold)
    assert ours.n_iter == ref_iter
    np.testing.assert_array_equal(ours.labels, ref_labels)
    np.testing.assert_allclose(ours.posteriors, ref_post, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.log_likelihood, ref_hist, rtol=0, atol=1e-12)


def test_the_two_sums_over_votes_are_bincounts_per_class():
    """The E-step's combined-index bincount adds each bin's votes in vote order, as one bincount
    per class does, to the bit; the M-step's sorted runs differ from it only in round-off."""
    items, workers, labels, n_items, n_workers, K = random_votes(6, n_votes=3000)
    g = _Votes(items, workers, labels, n_items, n_workers, K)
    rng = np.random.default_rng(6)
    per_pair, per_item = rng.normal(size=(n_workers * K, K)), rng.random((n_items, K))
    pair = workers * K + labels
    by_item = np.stack([np.bincount(items, weights=per_pair[pair, k], minlength=n_items) for k in range(K)])
    by_pair = np.stack([np.bincount(pair, weights=per_item[items, k], minlength=n_workers * K) for k in range(K)], axis=1)
    assert np.array_equal(g.sum_over_items(per_pair), by_item)
    np.testing.assert_allclose(g.sum_over_pairs(per_item), by_pair, rtol=1e-13, atol=0)


# What dawid_skene gave on the shared sets before the speed-ups of issue #6 (and gives now): EM
# iterations, a digest of the labels, a digest of the encoded (item, worker, label) arrays, the
# last log-likelihood per vote, and the sum of the confidences.
RECORDED = {
    "bluebirds": (9, "5a860a30d99032d0", "710a4997749ec78d", -0.4484890728813552, 107.70172650749731),
    "rte": (10, "2feea95746e0ba2f", "b88987855219abd1", -0.4604929415469946, 793.1226020842747),
    "temp": (7, "465804bdf8c8e204", "0d1b42587538a050", -0.2737533142742797, 461.55066890073437),
    "adult": (27, "b2c9b91a4466c64a", "70dac4e6b1eb90b9", -0.39805288925366217, 10330.624569166866),
}


def _digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("name", REAL_SETS)
def test_dawid_skene_on_real_votes_is_what_was_recorded(name):
    votes = read_votes(real_set(name) / "votes.csv")
    n_iter, labels_digest, codes_digest, last_ll, confidence_sum = RECORDED[name]
    assert _digest(np.stack([votes.items, votes.workers, votes.labels]).astype(np.int64)) == codes_digest
    result = dawid_skene(votes.items, votes.workers, votes.labels)
    assert result.n_iter == n_iter and result.converged
    assert _digest(result.labels.astype(np.int8)) == labels_digest
    assert result.log_likelihood[-1] == pytest.approx(last_ll, rel=0, abs=1e-12)
    assert result.confidence.sum() == pytest.approx(confidence_sum, rel=0, abs=1e-8)


def reference_encode(values, classes=None):
    """Codes in sorted name order (numeric when all names are integers), one value at a time."""
    names = [str(v) for v in values]
    if classes is None:
        unique = sorted(set(names))
        try:
            unique = sorted(unique, key=int)
        except ValueError:
            pass
    else:
        unique = [str(c) for c in classes]
    return [unique.index(n) for n in names], unique


@pytest.mark.parametrize("column", [
    ["b", "a", "c", "a", "b", "http://x.org/a", "é"],
    ["10", "9", "100", "9", "10"],
    [3, 1, 2, 3, 1],
    ["1", 1, "2", 2.0],
    np.array(["z", "y", "z"]),
    np.array([5, 4, 5]),
])
def test_encode_is_the_reference_encoding(column):
    values = list(column)
    votes = encode(values, values, values)
    codes, names = reference_encode(values)
    for got, got_names in ((votes.items, votes.item_names), (votes.workers, votes.worker_names),
                           (votes.labels, votes.label_names)):
        assert got.tolist() == codes and got.dtype == np.int64
        assert got_names.tolist() == names


def test_encode_with_classes_keeps_their_order():
    votes = encode(["t1", "t2", "t3", "t1"], ["w", "w", "v", "v"], ["yes", "no", "no", "maybe"],
                   classes=["no", "maybe", "yes"])
    assert votes.labels.tolist() == [2, 0, 0, 1]
    assert votes.label_names.tolist() == ["no", "maybe", "yes"]
    with pytest.raises(ValueError, match=r"2 vote\(s\) have an empty label"):
        encode(["t1", "t2", "t3"], ["w", "w", "w"], ["", "a", ""])
