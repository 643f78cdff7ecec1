"""Checks and small vectorised helpers shared by the aggregation modules."""
from __future__ import annotations

import numpy as np


def as_index(name: str, values) -> np.ndarray:
    """A 1-D int64 array of non-negative indices, or a clear ``ValueError``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer indices (use crowd.aggregation.io.encode for names), got {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds a negative index ({int(arr.min())})")
    return arr


def check_votes(items, workers, labels, n_items=None, n_workers=None, n_classes=None):
    """Validate three parallel vote arrays and fill in the sizes.

    Returns ``(items, workers, labels, n_items, n_workers, n_classes)``. Raises ``ValueError`` on
    empty input, length mismatch, negative indices or a label outside ``range(n_classes)``.
    """
    items = as_index("items", items)
    workers = as_index("workers", workers)
    labels = as_index("labels", labels)
    if not (len(items) == len(workers) == len(labels)):
        raise ValueError(f"items, workers and labels differ in length: {len(items)}, {len(workers)}, {len(labels)}")
    if len(items) == 0:
        raise ValueError("no votes to aggregate: items, workers and labels are empty")
    n_items = _size("n_items", n_items, items, "items")
    n_workers = _size("n_workers", n_workers, workers, "workers")
    n_classes = _size("n_classes", n_classes, labels, "labels")
    return items, workers, labels, n_items, n_workers, n_classes


def _size(name, given, arr, what):
    seen = int(arr.max()) + 1
    if given is None:
        return seen
    given = int(given)
    if seen > given:
        raise ValueError(f"{what} holds index {seen - 1} but {name}={given}: unknown {what[:-1]}")
    return given


def pick_max(scores: np.ndarray, tie_priority: np.ndarray | None = None, rng=None) -> np.ndarray:
    """Row-wise argmax; ties go to the class with the highest ``tie_priority`` (then the lowest index).

    With ``rng`` (a ``numpy.random.Generator``) ties are broken at random instead.
    """
    best = scores.max(axis=1, keepdims=True)
    tied = np.isclose(scores, best, rtol=1e-12, atol=1e-12)
    if rng is not None:
        return np.argmax(tied * (1.0 + rng.random(scores.shape)), axis=1)
    if tie_priority is None:
        return np.argmax(tied, axis=1)
    # rank 1..K by priority, stable so equal priorities keep the lower index first
    order = np.argsort(-np.asarray(tie_priority, dtype=float), kind="stable")
    rank = np.empty(len(order), dtype=float)
    rank[order] = np.arange(len(order), 0, -1)
    return np.argmax(tied * rank, axis=1)


def normalise_rows(m: np.ndarray) -> np.ndarray:
    s = m.sum(axis=1, keepdims=True)
    out = np.divide(m, s, out=np.full_like(m, 1.0 / m.shape[1]), where=s > 0)
    return out


def softmax_rows(log_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise softmax and the row log-sum-exp, stable for very negative logs.

    Rows are short (K classes) and many, so the row max and sum run as K column operations over
    all rows, which NumPy does much faster than an ``axis=1`` reduction of length K.
    """
    cols = log_m.T
    top = cols[0].copy()
    for k in range(1, cols.shape[0]):
        np.maximum(top, cols[k], out=top)
    e = np.exp(log_m - top[:, None])
    total = e[:, 0].copy()
    for k in range(1, e.shape[1]):
        total += e[:, k]
    e /= total[:, None]
    return e, np.log(total) + top


def softmax_classes(log_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmax_rows` for a class-major ``(K, n)`` array (one row per class), in place.

    ``log_t`` must be a C-ordered float64 array the caller no longer needs: it is overwritten with
    the softmax over its columns, and returned with the log-sum-exp of each column. Every step is a
    whole-row operation on contiguous memory, and the arithmetic is the same, in the same order, as
    in :func:`softmax_rows` on the transpose, so the numbers are identical.
    """
    top = log_t[0].copy()
    for row in log_t[1:]:
        np.maximum(top, row, out=top)
    log_t -= top
    np.exp(log_t, out=log_t)
    total = log_t[0].copy()
    for row in log_t[1:]:
        total += row
    log_t /= total
    np.log(total, out=total)
    total += top
    return log_t, total
