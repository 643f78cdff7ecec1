"""Instance spotting: turn the clicks of several workers into one point per object instance.

In COCO's instance-spotting stage each worker clicks once on every instance of a category in an
image (and may tick "too many to mark"). Here the clicks of all workers on one image+category are
clustered, a cluster clicked by at least ``min_workers`` distinct workers becomes an instance at the
median of its clicks, and the "too many" ticks are put to a vote.

Scale-aware radius. Two clicks by different workers are linked when their distance is at most
the smaller of their two radii, and the radius of click ``c`` is::

    r_c = min(radius_frac * image diagonal,  neighbour_frac * d_own(c))

where ``d_own(c)`` is the distance from ``c`` to the nearest other click of the same worker on the
same image+category. The first term scales with the image; the second shrinks the radius in a
crowd, because a worker who clicked twice 40 px apart is telling us those are two instances, so
nothing farther than 20 px from either click should be merged with it. Clusters are the connected
components of the links (single linkage). Clicks of one worker are never linked to each other.

Everything is vectorised over clicks and click pairs (pairs only within an image+category).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arrays import as_index

__all__ = ["Instances", "TooMany", "cluster_clicks", "too_many_vote", "connected_components", "group_median"]


@dataclass(frozen=True)
class Instances:
    image: np.ndarray  # (n_instances,) image index
    category: np.ndarray  # (n_instances,) category index
    x: np.ndarray  # centre: median of the cluster's clicks, in image pixels
    y: np.ndarray
    n_workers: np.ndarray  # distinct workers who clicked the instance
    n_clicks: np.ndarray
    instance_of_click: np.ndarray  # (n_clicks,) instance index, -1 if its cluster was dropped

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class TooMany:
    image: np.ndarray  # one entry per image+category that received answers
    category: np.ndarray
    n_workers: np.ndarray  # distinct workers who answered
    n_flagged: np.ndarray  # of them, how many ticked "too many"
    too_many: np.ndarray  # bool: the crowd's verdict


def _float(name, v, n):
    arr = np.asarray(v, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds a non-finite value")
    return arr


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (the smallest member index) of each of ``n`` nodes linked by edges ``a[i]-b[i]``.

    Min-label propagation with pointer jumping; each round is a pair of ``np.minimum.at`` over
    the edges, and the number of rounds grows with the log of the component diameter.
    """
    label = np.arange(n)
    if len(a) == 0:
        return label
    while True:
        old = label.copy()
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        np.minimum.at(label, la, low)
        np.minimum.at(label, lb, low)
        label = label[label]  # pointer jumping
        label = label[label]
        if np.array_equal(label, old):
            return label


def group_median(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` within each group (``nan`` for an empty group), by one lexsort."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.full(n_groups, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = (v[lo] + v[hi]) / 2.0
    return out


def _pairs_within_groups(sorted_groups: np.ndarray):
    """All index pairs ``(i, j)``, ``i < j``, of positions sharing a group (input sorted by group)."""
    n = len(sorted_groups)
    change = np.flatnonzero(np.diff(sorted_groups)) + 1
    ends = np.repeat(np.concatenate((change, [n])), np.diff(np.concatenate(([0], change, [n]))))
    partners = ends - np.arange(n) - 1
    first = np.repeat(np.arange(n), partners)
    start_of_run = np.cumsum(partners) - partners
    second = first + 1 + (np.arange(len(first)) - np.repeat(start_of_run, partners))
    return first, second


def cluster_clicks(
    images, categories, workers, x, y, *, image_width, image_height,
    radius_frac: float = 0.1, neighbour_frac: float = 0.5, min_workers: int = 2,
) -> Instances:
    """Cluster clicks into instances (see the module docstring for the rule).

    ``images``, ``categories``, ``workers``: integer index per click; ``x``, ``y``: pixels;
    ``image_width``/``image_height``: one entry per image index. ``min_workers``: distinct workers
    a cluster needs to count as an instance. Instances come out sorted by image, category, x, y.
    """
    images = as_index("images", images)
    categories = as_index("categories", categories)
    workers = as_index("workers", workers)
    n = len(images)
    if not (len(categories) == len(workers) == n):
        raise ValueError("images, categories, workers, x and y must have the same length")
    x = _float("x", x, n)
    y = _float("y", y, n)
    if n == 0:
        raise ValueError("no clicks to cluster")
    if min_workers < 1:
        raise ValueError("min_workers must be at least 1")
    if radius_frac <= 0 or neighbour_frac <= 0:
        raise ValueError("radius_frac and neighbour_frac must be positive")
    width = np.asarray(image_width, dtype=float)
    height = np.asarray(image_height, dtype=float)
    if width.ndim != 1 or width.shape != height.shape or len(width) <= images.max():
        raise ValueError("image_width and image_height need one entry per image index")
    if (width <= 0).any() or (height <= 0).any():
        raise ValueError("image sizes must be positive")
    diag = np.hypot(width, height)

    n_cat = int(categories.max()) + 1
    group = images * n_cat + categories
    order = np.lexsort((workers, group))
    g = group[order]
    w = workers[order]
    px, py = x[order], y[order]

    i, j = _pairs_within_groups(g)
    d = np.hypot(px[i] - px[j], py[i] - py[j])
    same = w[i] == w[j]
    own = np.full(n, np.inf)
    np.minimum.at(own, i[same], d[same])
    np.minimum.at(own, j[same], d[same])
    radius = np.minimum(radius_frac * diag[images[order]], neighbour_frac * own)
    link = ~same & (d <= np.minimum(radius[i], radius[j]))
    comp = connected_components(n, i[link], j[link])

    # distinct workers per component
    _, comp_idx = np.unique(comp, return_inverse=True)
    n_comp = int(comp_idx.max()) + 1
    n_w = int(w.max()) + 1
    uniq_cw = np.unique(comp_idx * n_w + w)
    workers_per = np.bincount(uniq_cw // n_w, minlength=n_comp)
    keep = workers_per >= min_workers
    cx = group_median(comp_idx, px, n_comp)
    cy = group_median(comp_idx, py, n_comp)
    comp_group = np.zeros(n_comp, dtype=np.int64)
    comp_group[comp_idx] = g
    clicks_per = np.bincount(comp_idx, minlength=n_comp)

    kept = np.flatnonzero(keep)
    out_order = kept[np.lexsort((cy[kept], cx[kept], comp_group[kept]))]
    new_id = np.full(n_comp, -1)
    new_id[out_order] = np.arange(len(out_order))
    instance_of_click = np.empty(n, dtype=np.int64)
    instance_of_click[order] = new_id[comp_idx]
    return Instances(
        image=comp_group[out_order] // n_cat,
        category=comp_group[out_order] % n_cat,
        x=cx[out_order], y=cy[out_order],
        n_workers=workers_per[out_order], n_clicks=clicks_per[out_order],
        instance_of_click=instance_of_click,
    )


def too_many_vote(images, categories, workers, flags, *, min_share: float = 0.5) -> TooMany:
    """The crowd's "too many instances to mark" verdict per image+category.

    Each worker counts once per image+category (flagged if any of their answers ticked it). The
    verdict is ``n_flagged >= min_share * n_workers``: with the default 0.5 a tie counts as "too
    many", because then the stage sends the image to be annotated as a crowd rather than risk
    missing instances (the same recall-first choice COCO made).
    """
    images = as_index("images", images)
    categories = as_index("categories", categories)
    workers = as_index("workers", workers)
    flags = as_index("flags", flags)
    if not (len(images) == len(categories) == len(workers) == len(flags)):
        raise ValueError("images, categories, workers and flags must have the same length")
    if len(images) == 0:
        raise ValueError("no answers to vote on")
    if flags.max() > 1:
        raise ValueError("flags must be 0 or 1")
    if not 0 < min_share <= 1:
        raise ValueError("min_share must be in (0, 1]")
    n_cat = int(categories.max()) + 1
    n_w = int(workers.max()) + 1
    group = images * n_cat + categories
    key = group * n_w + workers
    uniq, inv = np.unique(key, return_inverse=True)
    flagged = (np.bincount(inv, weights=flags, minlength=len(uniq)) > 0).astype(np.int64)
    groups, g_idx = np.unique(uniq // n_w, return_inverse=True)
    n_workers = np.bincount(g_idx, minlength=len(groups))
    n_flagged = np.bincount(g_idx, weights=flagged, minlength=len(groups)).astype(np.int64)
    return TooMany(image=groups // n_cat, category=groups % n_cat, n_workers=n_workers,
                   n_flagged=n_flagged, too_many=n_flagged >= min_share * n_workers - 1e-9)
