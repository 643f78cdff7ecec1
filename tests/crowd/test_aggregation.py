"""Categorical aggregation (crowd.aggregation.categorical and .io): synthetic crowds with known
truth, edge cases, determinism, and the real MTurk vote sets against crowd-kit's figures."""
from __future__ import annotations

import io

import numpy as np
import pytest

from crowd.aggregation import (
    aggregate, dawid_skene, encode, majority_vote, one_coin_dawid_skene, presence_any, read_truth,
    read_votes, wawa,
)
from crowd.aggregation.categorical import METHODS
from tests.crowd.aggregation_data import CROWDKIT_DS, CROWDKIT_MV, REAL_SETS, one_coin, real_set, synthetic_crowd


def accuracy(labels, truth):
    return float(np.mean(np.asarray(labels) == np.asarray(truth)))


# --- synthetic crowds ---------------------------------------------------------------------------

@pytest.fixture
def good_and_adversarial():
    """3 fair workers (accuracy 0.7) and 2 adversaries who answer the opposite 90% of the time."""
    return synthetic_crowd(one_coin([0.7, 0.7, 0.7, 0.1, 0.1]), 2000, seed=1)


def test_dawid_skene_beats_majority_against_adversaries(good_and_adversarial):
    items, workers, labels, truth = good_and_adversarial
    mv = majority_vote(items, workers, labels)
    ds = dawid_skene(items, workers, labels)
    # the best any method can do: the weighted vote with the true accuracies
    oracle = majority_vote(items, workers, labels, weights=np.log(np.array([7 / 3] * 3 + [1 / 9] * 2)))
    assert accuracy(mv.labels, truth) < 0.7
    assert accuracy(ds.labels, truth) > 0.93
    assert accuracy(ds.labels, truth) >= accuracy(oracle.labels, truth) - 0.01
    # it learned that the adversaries flip: their confusion matrix is anti-diagonal
    assert np.all(ds.confusion[3:, 0, 1] > 0.8) and np.all(ds.confusion[3:, 1, 0] > 0.8)
    assert np.allclose(ds.confusion[:3, [0, 1], [0, 1]], 0.7, atol=0.05)
    assert ds.converged and ds.n_iter < 100


def test_dawid_skene_recovers_class_specific_bias():
    """Three classes; two workers say class 0 for anything they are unsure of."""
    biased = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]])
    fair = np.full((3, 3), 0.15) + np.eye(3) * 0.55
    confs = np.stack([biased, biased, fair, fair, fair])
    items, workers, labels, truth = synthetic_crowd(confs, 3000, prior=[0.2, 0.4, 0.4], seed=2)
    ds = dawid_skene(items, workers, labels)
    mv = majority_vote(items, workers, labels)
    assert accuracy(ds.labels, truth) > accuracy(mv.labels, truth) + 0.03
    assert np.allclose(ds.priors, [0.2, 0.4, 0.4], atol=0.03)
    assert np.allclose(ds.confusion[0], biased, atol=0.06)


def test_one_coin_and_wawa_beat_majority_with_uneven_workers():
    items, workers, labels, truth = synthetic_crowd(one_coin([0.95, 0.6, 0.6, 0.6, 0.6]), 3000, seed=3)
    mv = accuracy(majority_vote(items, workers, labels).labels, truth)
    assert accuracy(one_coin_dawid_skene(items, workers, labels).labels, truth) > mv + 0.05
    w = wawa(items, workers, labels)
    assert w.worker_skill[0] > w.worker_skill[1:].max()


def test_posteriors_are_distributions_and_confidence_is_the_chosen_one(good_and_adversarial):
    items, workers, labels, _ = good_and_adversarial
    for method in METHODS:
        r = aggregate(method, items, workers, labels)
        assert r.posteriors.shape == (2000, 2)
        assert np.allclose(r.posteriors.sum(axis=1), 1.0)
        assert np.array_equal(r.confidence, r.posteriors[np.arange(2000), r.labels])
        assert np.array_equal(r.labels, np.argmax(r.posteriors, axis=1)) or method in ("majority", "wawa")


def test_em_never_lowers_the_likelihood_without_pseudo_counts(good_and_adversarial):
    items, workers, labels, _ = good_and_adversarial
    r = dawid_skene(items, workers, labels, prior_correct=0.0, tol=0.0, max_iter=40)
    assert np.all(np.diff(r.log_likelihood) >= -1e-9)
    assert not r.converged and r.n_iter == 40


# --- tie rule -----------------------------------------------------------------------------------

def test_majority_tie_rules():
    # item 0: 1-1 tie between classes 0 and 2; item 1: two votes for class 2; item 2: 1-1 tie 1 vs 2
    items = [0, 0, 1, 1, 2, 2]
    workers = [0, 1, 0, 1, 0, 1]
    labels = [0, 2, 2, 2, 1, 2]
    first = majority_vote(items, workers, labels)
    assert first.labels.tolist() == [0, 2, 1]  # lowest class index
    assert first.confidence.tolist() == [0.5, 1.0, 0.5]
    prior = majority_vote(items, workers, labels, tie="prior")
    assert prior.labels.tolist() == [2, 2, 2]  # class 2 has the most votes overall
    random = [majority_vote(items, workers, labels, tie="random", seed=s).labels for s in range(20)]
    assert {int(r[0]) for r in random} == {0, 2} and all(int(r[1]) == 2 for r in random)
    assert np.array_equal(majority_vote(items, workers, labels, tie="random", seed=7).labels,
                          majority_vote(items, workers, labels, tie="random", seed=7).labels)
    with pytest.raises(ValueError, match="tie must be one of"):
        majority_vote(items, workers, labels, tie="coin")


def test_class_order_decides_ties_so_put_the_safe_answer_first():
    votes = encode(["a", "a"], ["u", "v"], ["present", "absent"], classes=["absent", "present"])
    assert votes.label_names[majority_vote(votes.items, votes.workers, votes.labels).labels[0]] == "absent"


# --- edge cases ---------------------------------------------------------------------------------

def test_single_worker_is_followed():
    labels = np.array([0, 1, 1, 0, 1])
    for method in METHODS:
        r = aggregate(method, np.arange(5), np.zeros(5, int), labels)
        assert r.labels.tolist() == labels.tolist(), method


def test_all_agree_gives_confident_labels():
    items = np.repeat(np.arange(50), 4)
    labels = np.repeat(np.arange(50) % 3, 4)
    for method in METHODS:
        r = aggregate(method, items, np.tile(np.arange(4), 50), labels)
        assert r.labels.tolist() == (np.arange(50) % 3).tolist()
        assert r.confidence.min() > 0.9, method


def test_items_without_votes_get_no_label():
    r = dawid_skene([0, 0, 2, 2], [0, 1, 0, 1], [1, 1, 0, 0], n_items=4)
    assert r.labels.tolist() == [1, -1, 0, -1]
    assert np.allclose(r.posteriors[1], r.priors) and r.confidence[1] == 0
    assert r.n_votes.tolist() == [2, 0, 2, 0]
    assert majority_vote([0, 0], [0, 1], [1, 1], n_items=2).labels.tolist() == [1, -1]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bad_input_is_a_clear_error(method):
    with pytest.raises(ValueError, match="no votes"):
        aggregate(method, [], [], [])
    with pytest.raises(ValueError, match="differ in length"):
        aggregate(method, [0, 1], [0], [0, 1])
    with pytest.raises(ValueError, match="negative"):
        aggregate(method, [0, -1], [0, 0], [0, 1])
    with pytest.raises(ValueError, match="unknown label"):
        aggregate(method, [0, 1], [0, 0], [0, 3], n_classes=2)
    with pytest.raises(ValueError, match="integer indices"):
        aggregate(method, ["a", "b"], [0, 0], [0, 1])
    with pytest.raises(ValueError, match="unknown method"):
        aggregate("median", [0], [0], [0])


def test_unknown_label_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown label: 'maybe'"):
        encode(["t1", "t2"], ["w", "w"], ["yes", "maybe"], classes=["no", "yes"])
    with pytest.raises(ValueError, match="empty label"):
        encode(["t1"], ["w"], [""])


def test_presence_any_worker_is_recall_first():
    # item 0: one of three workers saw it; item 1: nobody; item 2: one worker, twice
    items = [0, 0, 0, 1, 1, 2, 2]
    workers = [0, 1, 2, 0, 1, 0, 0]
    flags = [0, 1, 0, 0, 0, 1, 1]
    present, n_yes, n_workers = presence_any(items, workers, flags)
    assert present.tolist() == [True, False, True]
    assert n_yes.tolist() == [1, 0, 1] and n_workers.tolist() == [3, 2, 1]
    assert presence_any(items, workers, flags, min_workers=2)[0].tolist() == [False, False, False]
    with pytest.raises(ValueError, match="0 or 1"):
        presence_any([0], [0], [2])


# --- determinism --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(METHODS))
def test_same_input_same_output_whatever_the_row_order(method, good_and_adversarial):
    items, workers, labels, _ = good_and_adversarial
    a = aggregate(method, items, workers, labels)
    b = aggregate(method, items, workers, labels)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.posteriors, b.posteriors)
    perm = np.random.default_rng(5).permutation(len(items))
    c = aggregate(method, items[perm], workers[perm], labels[perm])
    assert np.array_equal(a.labels, c.labels)
    assert np.allclose(a.posteriors, c.posteriors, atol=1e-9)


# --- CSV ----------------------------------------------------------------------------------------

def test_read_votes_maps_names_to_indices():
    text = "\ufefftask,worker,label,extra\nt2,w1,10\nt1,w2,9\nt1,w1,10\n\nt3,w2,2\n"
    v = read_votes(io.StringIO(text))
    assert v.label_names.tolist() == ["2", "9", "10"]  # numeric order when all are integers
    assert v.item_names.tolist() == ["t1", "t2", "t3"]
    assert v.items.tolist() == [1, 0, 0, 2] and v.labels.tolist() == [2, 1, 2, 0]
    assert v.workers.tolist() == [0, 1, 0, 1]
    assert len(v) == 4 and v.n_items == 3 and v.n_workers == 2 and v.n_classes == 3
    assert v.item_index(["t3", "nope"]).tolist() == [2, -1]


def test_read_votes_errors():
    with pytest.raises(ValueError, match="lacks column"):
        read_votes(io.StringIO("task,label\nt,1\n"))
    with pytest.raises(ValueError, match="no votes"):
        read_votes(io.StringIO("task,worker,label\n"))
    with pytest.raises(ValueError, match="is empty"):
        read_votes(io.StringIO(""))
    with pytest.raises(ValueError, match="row 3 has 2"):
        read_votes(io.StringIO("task,worker,label\nt,w,1\nt,w\n"))


# --- the real MTurk sets ------------------------------------------------------------------------

def _score(name, method, **kwargs):
    folder = real_set(name)
    votes = read_votes(folder / "votes.csv")
    truth = read_truth(folder / "truth.csv")
    names = np.array(list(truth))
    idx = votes.item_index(names)
    scored = idx >= 0
    result = aggregate(method, votes.items, votes.workers, votes.labels, **kwargs)
    true = votes.label_index([truth[n] for n in names[scored]])
    return accuracy(result.labels[idx[scored]], true), result


@pytest.mark.parametrize("name", REAL_SETS)
def test_dawid_skene_on_real_votes_matches_crowd_kit(name):
    acc, result = _score(name, "ds")
    assert acc >= CROWDKIT_DS[name] - 0.005, f"{name}: DS accuracy {acc:.4f} < crowd-kit {CROWDKIT_DS[name]}"
    assert result.converged


@pytest.mark.parametrize("name", REAL_SETS)
def test_majority_on_real_votes_matches_crowd_kit(name):
    acc, _ = _score(name, "majority")
    assert abs(acc - CROWDKIT_MV[name]) < 0.001, f"{name}: {acc:.4f}"


def test_rte_has_65_ties_and_the_tie_rule_matters():
    votes = read_votes(real_set("rte") / "votes.csv")
    mv = majority_vote(votes.items, votes.workers, votes.labels)
    assert int((mv.confidence == 0.5).sum()) == 65
    first, _ = _score("rte", "majority", tie="first")
    prior, _ = _score("rte", "majority", tie="prior")
    assert first == pytest.approx(0.91875) and prior == pytest.approx(0.875)


def test_textbook_maximum_likelihood_ds_on_adult_is_the_published_748():
    acc, _ = _score("adult", "ds", prior_correct=0.0)
    assert acc == pytest.approx(0.748, abs=0.001)


def test_aggregation_is_pure_numpy_without_django():
    """The aggregation package must import and run without Django (ARCHITECTURE: tested alone)."""
    import subprocess
    import sys

    from tests.crowd.aggregation_data import REPO

    code = (
        "import sys; import crowd.aggregation as a; import crowd.aggregation.clicks, crowd.aggregation.adaptive, "
        "crowd.aggregation.quality, crowd.aggregation.verification; "
        "a.dawid_skene([0, 0, 1], [0, 1, 0], [1, 1, 0]); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('django', 'pandas')], 'imported Django or pandas'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr


def test_gold_items_are_pinned_and_teach_the_worker_matrices():
    """Adversaries in the majority fool every unsupervised method; a few gold items fix that."""
    items, workers, labels, truth = synthetic_crowd(one_coin([0.8, 0.8, 0.1, 0.1, 0.1]), 1000, seed=12)
    plain = dawid_skene(items, workers, labels)
    assert accuracy(plain.labels, truth) < 0.5  # the mirror-image solution
    gold = np.arange(0, 1000, 20)
    guided = dawid_skene(items, workers, labels, gold_items=gold, gold_labels=truth[gold])
    assert accuracy(guided.labels, truth) > 0.9
    assert np.all(guided.posteriors[gold, truth[gold]] == 1.0)
    with pytest.raises(ValueError, match="both"):
        dawid_skene(items, workers, labels, gold_items=gold)
    with pytest.raises(ValueError, match="out of range"):
        dawid_skene(items, workers, labels, gold_items=[5000], gold_labels=[0])
