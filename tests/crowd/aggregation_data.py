"""Helpers for the aggregation tests: synthetic crowds with known truth, and the real vote sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CROWD_VOTES = REPO.parent / "shared" / "data" / "crowd-votes"
REAL_SETS = ("bluebirds", "rte", "temp", "adult")

# crowd-kit 1.4.2 on these sets (shared/data/crowd-votes/README.md): majority vote and Dawid-Skene.
CROWDKIT_MV = {"bluebirds": 0.759, "rte": 0.919, "temp": 0.939, "adult": 0.763}
CROWDKIT_DS = {"bluebirds": 0.889, "rte": 0.927, "temp": 0.942, "adult": 0.766}


def real_set(name: str) -> Path:
    folder = CROWD_VOTES / name
    if not (folder / "votes.csv").is_file():
        raise AssertionError(f"the shared crowd votes are missing: expected {folder}/votes.csv beside the clone")
    return folder


def synthetic_crowd(confusions, n_items: int, *, prior=None, seed: int = 0, votes_per_item=None):
    """Votes of workers with known confusion matrices ``[worker, true, said]``.

    Every worker labels every item unless ``votes_per_item`` picks that many workers at random.
    Returns ``(items, workers, labels, truth)``.
    """
    rng = np.random.default_rng(seed)
    conf = np.asarray(confusions, dtype=float)
    n_workers, K, _ = conf.shape
    prior = np.full(K, 1.0 / K) if prior is None else np.asarray(prior)
    truth = rng.choice(K, size=n_items, p=prior)
    if votes_per_item is None:
        items = np.repeat(np.arange(n_items), n_workers)
        workers = np.tile(np.arange(n_workers), n_items)
    else:
        items = np.repeat(np.arange(n_items), votes_per_item)
        workers = np.concatenate([rng.choice(n_workers, votes_per_item, replace=False) for _ in range(n_items)])
    cdf = np.cumsum(conf[workers, truth[items]], axis=1)
    labels = (rng.random(len(items))[:, None] > cdf).sum(axis=1)
    return items, workers, np.minimum(labels, K - 1), truth


def one_coin(accuracies, K: int = 2) -> np.ndarray:
    acc = np.asarray(accuracies, dtype=float)
    off = (1 - acc) / (K - 1)
    return off[:, None, None] * (1 - np.eye(K)) + acc[:, None, None] * np.eye(K)
