"""Verification votes: is this annotation good? Yes/no votes weighted by worker reliability.

A worker of accuracy ``a`` (probability of judging an item correctly, either way) who votes "yes"
multiplies the odds that the item is good by ``a / (1 - a)``; a "no" divides them by it. So with a
prior probability ``p0`` that an item is good, the log-odds after the votes are::

    score = logit(p0) + sum over votes of  w_worker * (+1 for yes, -1 for no),   w = log(a / (1 - a))

and ``P(good) = sigmoid(score)``. This is the Bayes-optimal weighted majority for independent
workers (Nitzan & Paroush, 1982). Equal accuracies reduce it to plain majority; a worker at 0.5
weighs nothing; a worker below 0.5 (reliably wrong) has a negative weight. Accuracies come from
:mod:`.quality` (gold items, Beta-smoothed) and are clipped to ``[0.01, 0.99]`` so that no single
worker can decide alone.

Decision: accept when ``P(good) > threshold`` (default 0.5); an exact tie rejects, so an item
needs positive evidence to pass and a rejected item goes back to be redone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arrays import check_votes

__all__ = ["Verification", "log_odds_weights", "verify"]

ACCURACY_CLIP = (0.01, 0.99)


@dataclass(frozen=True)
class Verification:
    accept: np.ndarray  # (n_items,) bool
    p_good: np.ndarray  # (n_items,) posterior probability the item is good
    n_votes: np.ndarray  # (n_items,)
    n_yes: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """Posterior probability of the decision taken (``p_good`` if accepted, else ``1 - p_good``)."""
        return np.where(self.accept, self.p_good, 1.0 - self.p_good)


def log_odds_weights(accuracy, *, clip=ACCURACY_CLIP) -> np.ndarray:
    """``log(a / (1 - a))`` per worker, with ``a`` clipped to ``clip``."""
    a = np.clip(np.asarray(accuracy, dtype=float), *clip)
    return np.log(a) - np.log1p(-a)


def verify(
    items, workers, votes, *, worker_accuracy=None, default_accuracy: float = 0.75,
    prior_good: float = 0.5, threshold: float = 0.5, n_items=None,
) -> Verification:
    """Accept or reject each item from yes(1)/no(0) votes.

    ``worker_accuracy``: one accuracy per worker index (``nan`` = unknown); unknown workers, and
    all workers when it is ``None``, get ``default_accuracy``. Items without votes keep
    ``P(good) = prior_good`` and are not accepted.
    """
    items, workers, votes, n_items, n_workers, _ = check_votes(items, workers, votes, n_items, None, 2)
    if not 0 < prior_good < 1:
        raise ValueError("prior_good must be strictly between 0 and 1")
    if not 0 < threshold < 1:
        raise ValueError("threshold must be strictly between 0 and 1")
    acc = np.full(n_workers, float(default_accuracy))
    if worker_accuracy is not None:
        given = np.asarray(worker_accuracy, dtype=float)
        if given.ndim != 1 or len(given) < n_workers:
            raise ValueError(f"worker_accuracy needs one entry per worker index (at least {n_workers}), got shape {given.shape}")
        if np.any((given < 0) | (given > 1)):
            raise ValueError("worker_accuracy values must lie in [0, 1] (or be nan for unknown)")
        acc = np.where(np.isnan(given[:n_workers]), acc, given[:n_workers])
    weight = log_odds_weights(acc)
    sign = 2.0 * votes - 1.0
    score = np.log(prior_good / (1 - prior_good)) + np.bincount(items, weights=weight[workers] * sign, minlength=n_items)
    p_good = 1.0 / (1.0 + np.exp(-score))
    n_votes = np.bincount(items, minlength=n_items)
    n_yes = np.bincount(items, weights=votes, minlength=n_items).astype(np.int64)
    accept = (p_good > threshold) & (n_votes > 0)
    return Verification(accept=accept, p_good=p_good, n_votes=n_votes, n_yes=n_yes)
