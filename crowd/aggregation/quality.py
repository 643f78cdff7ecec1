"""Worker quality: accuracy on gold items, skill from Dawid-Skene, and what to do about it.

Gold items are items of known answer mixed into ordinary tasks. A worker who answered ``n`` of
them and got ``c`` right has, under a ``Beta(a, b)`` prior on their accuracy, the posterior
``Beta(a + c, b + n - c)`` with mean ``(c + a) / (n + a + b)``. The prior (default ``a=4, b=1``:
"about 80% right, worth five answers") keeps a new worker who got their first gold item wrong from
scoring 0 and one who got it right from scoring 1.

Without gold, :func:`skill_from_confusion` reads each worker's expected accuracy off their
Dawid-Skene confusion matrix: ``sum_k prior[k] * confusion[w, k, k]``.

:func:`decide` turns accuracies into approve / reject / block, using the Beta posterior so that
it only blocks a worker when even an optimistic reading of the evidence is bad.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arrays import as_index

__all__ = ["GoldScore", "score_gold", "gold_accuracy", "skill_from_confusion", "Decision", "decide",
           "APPROVE", "REJECT", "BLOCK", "DECISION_NAMES"]

APPROVE, REJECT, BLOCK = 0, 1, 2
DECISION_NAMES = np.array(["approve", "reject", "block"])


@dataclass(frozen=True)
class GoldScore:
    accuracy: np.ndarray  # (n_workers,) Beta posterior mean
    n_gold: np.ndarray  # gold answers seen per worker
    n_correct: np.ndarray
    alpha: np.ndarray  # Beta posterior parameters
    beta: np.ndarray

    def bound(self, z: float = 1.645) -> tuple[np.ndarray, np.ndarray]:
        """Approximate ``(lower, upper)`` credible bounds, mean -/+ z posterior standard deviations
        (z = 1.645: about 90% two-sided), clipped to [0, 1]."""
        a, b = self.alpha, self.beta
        sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        return np.clip(self.accuracy - z * sd, 0, 1), np.clip(self.accuracy + z * sd, 0, 1)


def score_gold(items, workers, labels, gold_items, gold_labels, *, n_items=None):
    """Which votes fall on gold items, and were they right?

    Returns ``(on_gold, correct)``: boolean masks over the votes. ``gold_items``/``gold_labels`` are
    parallel arrays of item and class indices (an item listed twice is an error).
    """
    items = as_index("items", items)
    labels = as_index("labels", labels)
    as_index("workers", workers)
    gold_items = as_index("gold_items", gold_items)
    gold_labels = as_index("gold_labels", gold_labels)
    if len(gold_items) != len(gold_labels):
        raise ValueError("gold_items and gold_labels differ in length")
    if len(np.unique(gold_items)) != len(gold_items):
        raise ValueError("an item appears twice among the gold items")
    size = max(int(items.max(initial=-1)), int(gold_items.max(initial=-1))) + 1
    if n_items is not None:
        size = max(size, int(n_items))
    truth = np.full(size, -1)
    truth[gold_items] = gold_labels
    on_gold = truth[items] >= 0
    return on_gold, on_gold & (truth[items] == labels)


def gold_accuracy(workers, correct, *, n_workers=None, prior_correct: float = 4.0, prior_wrong: float = 1.0) -> GoldScore:
    """Beta-smoothed accuracy per worker from their gold answers (``correct``: 0/1 per gold vote)."""
    workers = as_index("workers", workers)
    correct = np.asarray(correct)
    if correct.shape != workers.shape:
        raise ValueError("workers and correct must have the same length")
    if prior_correct <= 0 or prior_wrong <= 0:
        raise ValueError("the Beta prior needs positive prior_correct and prior_wrong")
    if n_workers is None:
        n_workers = int(workers.max(initial=-1)) + 1
    n_gold = np.bincount(workers, minlength=n_workers)
    n_correct = np.bincount(workers, weights=correct.astype(float), minlength=n_workers).astype(np.int64)
    alpha = prior_correct + n_correct
    beta = prior_wrong + n_gold - n_correct
    return GoldScore(accuracy=alpha / (alpha + beta), n_gold=n_gold, n_correct=n_correct, alpha=alpha, beta=beta)


def skill_from_confusion(confusion: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Expected accuracy per worker from Dawid-Skene: ``sum_k prior[k] * confusion[w, k, k]``.

    ``confusion`` is ``(n_workers, K, K)`` with ``[w, true, said]`` (as ``Aggregation.confusion``).
    """
    confusion = np.asarray(confusion, dtype=float)
    priors = np.asarray(priors, dtype=float)
    if confusion.ndim != 3 or confusion.shape[1] != confusion.shape[2] or confusion.shape[1] != len(priors):
        raise ValueError("confusion must be (n_workers, K, K) and priors (K,)")
    return np.einsum("k,wkk->w", priors / priors.sum(), confusion)


@dataclass(frozen=True)
class Decision:
    code: np.ndarray  # APPROVE / REJECT / BLOCK per worker
    accuracy: np.ndarray

    @property
    def names(self) -> np.ndarray:
        return DECISION_NAMES[self.code]


def decide(score: GoldScore, *, reject_below: float = 0.6, block_below: float = 0.5, min_gold: int = 3, z: float = 1.645) -> Decision:
    """Approve, reject or block each worker.

    - ``block`` when the worker answered at least ``min_gold`` gold items and even the upper
      credible bound of their accuracy is below ``block_below`` (confidently bad: stop giving work);
    - ``reject`` when the posterior mean is below ``reject_below`` and they answered at least
      ``min_gold`` gold items (this batch's work is not paid);
    - ``approve`` otherwise, including workers with too little gold to judge.
    """
    if not 0 <= block_below <= reject_below <= 1:
        raise ValueError("need 0 <= block_below <= reject_below <= 1")
    _, upper = score.bound(z)
    enough = score.n_gold >= min_gold
    code = np.full(len(score.accuracy), APPROVE)
    code[enough & (score.accuracy < reject_below)] = REJECT
    code[enough & (upper < block_below)] = BLOCK
    return Decision(code=code, accuracy=score.accuracy)
