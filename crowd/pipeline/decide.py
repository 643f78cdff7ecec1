"""Per-item decisions of each stage: pure functions over plain votes (no Django), tested alone.

Each ``*_decide`` takes one item's answers so far and the stage's rule, and says whether the item
is finished and with what result. The rule is the same whether answers arrive one by one (the
pipeline's Celery tasks) or are replayed from the database (``manage.py pipeline_recompute``).

Fixed redundancy (COCO): an item is finished once it has as many answers as the stage asks for.
Adaptive redundancy: it is finished once it has ``min_answers`` and every decision it carries is at
least ``confidence`` sure, or once it reaches the cap (the stage's redundancy), whatever the doubt.

Ties: category labeling by majority asks one more worker on a tie while below the cap; at the cap a
tie counts as present (recall first, as COCO chose). Verification without a majority at the cap
is rejected (the outline is redrawn: precision first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crowd.aggregation.categorical import dawid_skene
from crowd.aggregation.clicks import cluster_clicks, too_many_vote
from crowd.aggregation.verification import verify

# Prior skill of a worker we know nothing about: sees 80 % of what is there, marks 1 % of what is not.
DEFAULT_SENSITIVITY = 0.8
DEFAULT_SPECIFICITY = 0.99
DEFAULT_PRESENCE = 0.1  # share of (image, category) pairs present, before any vote
DEFAULT_VERIFY_ACCURACY = 0.8
# Dawid-Skene cannot tell who is right between two workers who disagree (either could be the
# truth): a stage's first answers fit whichever way the start leans, and a careless worker can come
# out "never misses", whose blank then outweighs two careful marks. Until a third worker has
# answered, every worker keeps the prior skill.
MIN_SKILL_WORKERS = 3


@dataclass(frozen=True)
class Rule:
    """A stage's numbers, as the pipeline reads them from ``CrowdStage``."""

    redundancy: int  # fixed: answers per item; adaptive: the cap
    adaptive: bool = False
    min_answers: int = 2
    confidence: float = 0.95
    aggregation: str = "any"  # categories: any, majority, ds
    cluster_min_workers: int = 2

    @property
    def need(self) -> int:
        """Answers an item needs before it can be decided."""
        return min(self.min_answers, self.redundancy) if self.adaptive else self.redundancy


@dataclass
class Decision:
    finished: bool
    result: Any = None
    confidence: float | None = None
    reason: str = ""
    extra: dict = field(default_factory=dict)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


# --- Category labeling -----------------------------------------------------------------------

@dataclass(frozen=True)
class Skill:
    sensitivity: float = DEFAULT_SENSITIVITY  # P(marks c | c present)
    specificity: float = DEFAULT_SPECIFICITY  # P(leaves c | c absent)


def category_skills(rows: list[tuple[str, int, set[int]]], categories: list[int]) -> tuple[dict[str, Skill], float]:
    """Each worker's sensitivity and specificity, and the share of pairs present, by Dawid-Skene
    over every (image, category) pair the stage's answers cover. ``rows``: (worker, image, marked)."""
    workers = sorted({w for w, _, _ in rows})
    if len(workers) < MIN_SKILL_WORKERS or not categories:
        return {}, DEFAULT_PRESENCE
    images = sorted({i for _, i, _ in rows})
    w_index = {w: k for k, w in enumerate(workers)}
    i_index = {i: k for k, i in enumerate(images)}
    c_index = {c: k for k, c in enumerate(categories)}
    n_c = len(categories)
    items, who, labels = [], [], []
    for worker, image, marked in rows:
        base = i_index[image] * n_c
        flags = np.zeros(n_c, dtype=np.int64)
        for c in marked:
            if c in c_index:
                flags[c_index[c]] = 1
        items.append(base + np.arange(n_c))
        who.append(np.full(n_c, w_index[worker]))
        labels.append(flags)
    # Pseudo-counts start every worker near the prior skill: a handful of answers cannot make a
    # worker look perfect or hopeless.
    agg = dawid_skene(np.concatenate(items), np.concatenate(who), np.concatenate(labels),
                      n_items=len(images) * n_c, n_workers=len(workers), n_classes=2, prior_correct=2.0)
    conf = agg.confusion
    skills = {w: Skill(float(conf[k, 1, 1]), float(conf[k, 0, 0])) for w, k in w_index.items()}
    presence = float(agg.priors[1]) if agg.priors is not None else DEFAULT_PRESENCE
    return skills, min(max(presence, 0.01), 0.5)


def presence_posterior(votes: list[tuple[str, set[int]]], categories: list[int], skills: dict[str, Skill],
                       presence: float) -> dict[int, float]:
    """P(category present) per category, from who marked it and who did not."""
    out = {}
    for c in categories:
        score = _logit(presence)
        for worker, marked in votes:
            s = skills.get(worker, Skill())
            sens = min(max(s.sensitivity, 0.01), 0.999)
            spec = min(max(s.specificity, 0.01), 0.999)
            score += math.log(sens / (1 - spec)) if c in marked else math.log((1 - sens) / spec)
        out[c] = 1.0 / (1.0 + math.exp(-score))
    return out


def categories_decide(votes: list[tuple[str, set[int]]], categories: list[int], rule: Rule,
                      skills: dict[str, Skill] | None = None, presence: float = DEFAULT_PRESENCE) -> Decision:
    """One image: ``votes`` are (worker, categories marked present), one per worker."""
    n = len(votes)
    post = presence_posterior(votes, categories, skills or {}, presence)
    counts = {c: sum(c in marked for _, marked in votes) for c in categories}
    at_cap = n >= rule.redundancy
    if n < rule.need:
        return Decision(False, reason=f"{n} of {rule.need} answers")
    if rule.aggregation == "any":
        present = [c for c in categories if counts[c] >= 1]
    elif rule.aggregation == "majority":
        ties = [c for c in categories if 2 * counts[c] == n and n > 0]
        if ties and not at_cap:
            return Decision(False, reason="a tie: one more worker")
        present = [c for c in categories if 2 * counts[c] >= n and counts[c] > 0]
    else:
        present = [c for c in categories if post[c] >= 0.5]
    sure = min((max(p, 1 - p) for p in post.values()), default=1.0)
    if rule.adaptive and not at_cap and sure < rule.confidence:
        doubt = min(post, key=lambda c: max(post[c], 1 - post[c]))
        return Decision(False, confidence=sure, reason=f"category {doubt} only {max(post[doubt], 1 - post[doubt]):.2f} sure")
    return Decision(True, sorted(present), sure, "confident" if sure >= rule.confidence else "answers complete",
                    extra={"posterior": {str(c): round(p, 4) for c, p in post.items()},
                           "votes": {str(c): counts[c] for c in categories}})


# --- Instance spotting -----------------------------------------------------------------------

# Adaptive spotting weighs each click cluster as evidence that an object is there: a worker clicks
# a real object with probability 1 - SPOT_MISS and leaves a stray click where there is none with
# probability SPOT_STRAY (careful crowds do better, so these are on the cautious side).
SPOT_MISS = 0.15
SPOT_STRAY = 0.05


def cluster_posterior(k: int, n: int) -> float:
    """P(an object is there | k of n workers clicked it), from an even prior."""
    log_ratio = (k * math.log((1 - SPOT_MISS) / SPOT_STRAY)
                 + (n - k) * math.log(SPOT_MISS / (1 - SPOT_STRAY)))
    return 1.0 / (1.0 + math.exp(-log_ratio))


def spotting_decide(answers: list[tuple[str, list[tuple[float, float]], bool]], *, width: int, height: int,
                    rule: Rule) -> Decision:
    """One image and category: ``answers`` are (worker, clicks, "too many") per worker.

    The clicks of all workers are clustered (``cluster_clicks``: scale-aware radius); one instance
    per cluster, at its centre. Fixed redundancy keeps clusters that ``cluster_min_workers``
    workers clicked (capped at the number of answers). Adaptive: each cluster clicked by ``k`` of
    ``n`` workers is there with ``cluster_posterior(k, n)``; the item is finished once every
    cluster is at least ``confidence`` sure either way, and keeps the clusters more likely there
    than not.
    """
    n = len(answers)
    if n < rule.need:
        return Decision(False, reason=f"{n} of {rule.need} answers")
    workers = {w: k for k, w in enumerate(sorted({w for w, _, _ in answers}))}
    xs, ys, ws = [], [], []
    for worker, points, _ in answers:
        for x, y in points:
            xs.append(x)
            ys.append(y)
            ws.append(workers[worker])
    flags = too_many_vote(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                          np.array([workers[w] for w, _, _ in answers]), np.array([int(c) for _, _, c in answers]))
    crowd = bool(flags.too_many[0]) if len(flags.too_many) else False
    clusters: list[tuple[float, float, int]] = []
    if xs:
        found = cluster_clicks(np.zeros(len(xs), dtype=np.int64), np.zeros(len(xs), dtype=np.int64),
                               np.array(ws), np.array(xs), np.array(ys), image_width=[width], image_height=[height],
                               min_workers=1)
        clusters = [(round(float(x), 1), round(float(y), 1), int(k)) for x, y, k in zip(found.x, found.y, found.n_workers)]
    if rule.adaptive:
        post = [cluster_posterior(k, n) for _, _, k in clusters]
        sure = min((max(p, 1 - p) for p in post), default=1.0)
        if n < rule.redundancy and sure < rule.confidence and not crowd:
            return Decision(False, confidence=sure, reason=f"a click cluster only {sure:.2f} sure")
        kept = [c for c, p in zip(clusters, post) if p >= 0.5]
    else:
        sure = None
        kept = [c for c in clusters if c[2] >= min(rule.cluster_min_workers, n)]
    instances = [[x, y, k] for x, y, k in kept]
    return Decision(True, {"instances": instances, "crowd": crowd}, sure,
                    "clusters sure" if rule.adaptive else "answers complete")


# --- Segmentation ----------------------------------------------------------------------------

def segmentation_decide(answers: list[tuple[str, int | None]], rule: Rule) -> Decision:
    """One instance: ``answers`` are (worker, the outline's polygon id). The first outline stands;
    verification judges it."""
    drawn = [(w, p) for w, p in answers if p is not None]
    if not drawn:
        return Decision(False, reason="no outline yet")
    return Decision(True, {"polygon": drawn[0][1], "worker": drawn[0][0]}, None, "outline drawn")


# --- Verification ----------------------------------------------------------------------------

def verification_decide(votes: list[tuple[str, bool]], rule: Rule,
                        accuracies: dict[str, float] | None = None) -> Decision:
    """One outline: ``votes`` are (worker, accept). Majority weighted by each worker's reliability."""
    n = len(votes)
    if n < rule.need:
        return Decision(False, reason=f"{n} of {rule.need} votes")
    accuracies = accuracies or {}
    names = sorted({w for w, _ in votes})
    index = {w: k for k, w in enumerate(names)}
    acc = np.array([accuracies.get(w, math.nan) for w in names], dtype=float)
    v = verify(np.zeros(n, dtype=np.int64), np.array([index[w] for w, _ in votes]),
               np.array([int(a) for _, a in votes]), worker_accuracy=acc,
               default_accuracy=DEFAULT_VERIFY_ACCURACY, n_items=1)
    p_good = float(v.p_good[0])
    sure = max(p_good, 1 - p_good)
    if rule.adaptive and n < rule.redundancy and sure < rule.confidence:
        return Decision(False, confidence=sure, reason=f"only {sure:.2f} sure")
    accept = bool(v.accept[0])
    return Decision(True, {"accept": accept, "yes": int(v.n_yes[0]), "votes": n}, sure,
                    "accepted" if accept else "rejected")
