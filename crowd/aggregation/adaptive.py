"""Adaptive redundancy: ask for another answer only where it can still change the result.

Rule, per item, given its votes so far:

1. fewer than ``min_votes`` answers -> ask for another;
2. ``max_votes`` answers or more -> stop (cap), whatever the posterior;
3. otherwise stop as soon as the largest class posterior reaches ``threshold`` (default 0.95),
   else ask for another.

The posterior comes from the votes and the workers' accuracies (one-coin model: a worker of
accuracy ``a`` gives the true class with probability ``a`` and each other class with
``(1 - a) / (K - 1)``), or from a Dawid-Skene run (:func:`needs_more`). For two classes and a flat
prior, stopping at posterior ``>= t`` is Wald's sequential probability ratio test with error rates
``alpha = beta = 1 - t``: the log-likelihood ratio of the votes has crossed ``log(t / (1 - t))``
(:func:`sprt_threshold` converts). With accuracy-0.9 workers and ``t = 0.95``, two agreeing
answers are enough (posterior 0.988); a 1-1 split needs a third, and so on.

:func:`item_needs_answer` is what the pipeline calls for one item; :func:`needs_more` does a
whole batch at once from posteriors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ItemDecision", "item_posterior", "item_needs_answer", "needs_more", "sprt_threshold",
           "REASON_NAMES", "MORE_MIN", "STOP_CAP", "STOP_CONFIDENT", "MORE_UNSURE"]

MORE_MIN, STOP_CAP, STOP_CONFIDENT, MORE_UNSURE = 0, 1, 2, 3
REASON_NAMES = np.array(["below min_votes", "reached max_votes", "confident", "not yet confident"])


@dataclass(frozen=True)
class ItemDecision:
    need_more: bool
    label: int  # current best class (-1 without votes)
    posterior: np.ndarray  # (K,)
    n_votes: int
    reason: str


def sprt_threshold(alpha: float, beta: float | None = None) -> float:
    """The posterior threshold matching Wald's SPRT with error rates ``alpha`` (and ``beta``,
    default equal) for two classes with a flat prior: ``(1 - beta) / ((1 - beta) + alpha)``."""
    beta = alpha if beta is None else beta
    if not (0 < alpha < 1 and 0 < beta < 1):
        raise ValueError("alpha and beta must lie in (0, 1)")
    return (1 - beta) / ((1 - beta) + alpha)


def _check_rule(threshold, min_votes, max_votes):
    if not 0 < threshold < 1:
        raise ValueError("threshold must be strictly between 0 and 1")
    if min_votes < 0 or max_votes < 1 or min_votes > max_votes:
        raise ValueError("need 0 <= min_votes <= max_votes and max_votes >= 1")


def item_posterior(labels, accuracies, n_classes: int, *, prior=None) -> np.ndarray:
    """Class posterior of one item from its votes (class indices) and the voters' accuracies."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    acc = np.asarray(accuracies, dtype=float).reshape(-1)
    if labels.shape != acc.shape:
        raise ValueError("one accuracy per vote is needed")
    if n_classes < 2:
        raise ValueError("n_classes must be at least 2")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"a label lies outside range({n_classes})")
    acc = np.clip(np.where(np.isnan(acc), 0.7, acc), 1e-3, 1 - 1e-3)
    prior = np.full(n_classes, 1.0 / n_classes) if prior is None else np.asarray(prior, dtype=float)
    if prior.shape != (n_classes,) or np.any(prior <= 0):
        raise ValueError("prior must be n_classes positive numbers")
    log_wrong = np.log((1 - acc) / (n_classes - 1))
    log_p = np.log(prior / prior.sum()) + log_wrong.sum()
    log_p = log_p + np.bincount(labels, weights=np.log(acc) - log_wrong, minlength=n_classes)
    p = np.exp(log_p - log_p.max())
    return p / p.sum()


def item_needs_answer(
    labels, accuracies, n_classes: int, *, prior=None, threshold: float = 0.95,
    min_votes: int = 1, max_votes: int = 10,
) -> ItemDecision:
    """Does this item need another answer? ``labels``: the classes voted so far; ``accuracies``: the
    accuracy of each voter (``nan`` = unknown, taken as 0.7)."""
    _check_rule(threshold, min_votes, max_votes)
    post = item_posterior(labels, accuracies, n_classes, prior=prior)
    n = int(np.asarray(labels).size)
    more, reason = needs_more(post[None, :], np.array([n]), threshold=threshold, min_votes=min_votes,
                              max_votes=max_votes, with_reasons=True)
    return ItemDecision(need_more=bool(more[0]), label=int(np.argmax(post)) if n else -1, posterior=post,
                        n_votes=n, reason=str(REASON_NAMES[reason[0]]))


def needs_more(posteriors, n_votes, *, threshold: float = 0.95, min_votes: int = 1, max_votes: int = 10,
               with_reasons: bool = False):
    """Batch form of the rule: a boolean per item (and the reason codes if ``with_reasons``).

    ``posteriors``: ``(n_items, K)``, e.g. ``dawid_skene(...).posteriors``; ``n_votes``: answers per item.
    """
    _check_rule(threshold, min_votes, max_votes)
    post = np.asarray(posteriors, dtype=float)
    n = np.asarray(n_votes)
    if post.ndim != 2 or n.shape != (post.shape[0],):
        raise ValueError("posteriors must be (n_items, K) and n_votes (n_items,)")
    confident = post.max(axis=1) >= threshold
    reason = np.where(n < min_votes, MORE_MIN,
                      np.where(n >= max_votes, STOP_CAP, np.where(confident, STOP_CONFIDENT, MORE_UNSURE)))
    more = (reason == MORE_MIN) | (reason == MORE_UNSURE)
    return (more, reason) if with_reasons else more
