"""Quality of crowd results against the truth of simulated scenes.

Keys are plain strings and tuples so the caller can use image names or ids alike:

    category_scores(truth={"img1": {"cat"}}, predicted={"img1": {"cat", "dog"}})
    instance_counts(truth={("img1", "cat"): 2}, predicted={("img1", "cat"): 1})
    outline_scores(truth={("img1", "cat"): [outline, ...]}, predicted={("img1", "cat"): [outline, ...]})

An outline is a list of parts, each a flat ``[x1, y1, x2, y2, ...]`` polygon in image pixels, as
the tools post them. Empty denominators follow one rule: a score over nothing is perfect (1.0)
when nothing was missed or claimed wrongly (precision with no predictions, recall with no truth,
exact counts over no pairs), and a mean over nothing matched is 0.0.
"""
from __future__ import annotations

from shapely import make_valid
from shapely.geometry import MultiPolygon
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry.base import BaseGeometry


def outline_shape(parts: list[list[float]]) -> BaseGeometry:
    """The area an outline covers: the union of its parts, repaired if a part is not valid."""
    polygons = [ShapelyPolygon(list(zip(p[0::2], p[1::2]))) for p in parts if len(p) >= 6]
    if not polygons:
        return ShapelyPolygon()
    shape = polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)
    return shape if shape.is_valid else make_valid(shape)


def shape_iou(a: BaseGeometry, b: BaseGeometry) -> float:
    union = a.union(b).area
    return float(a.intersection(b).area / union) if union > 0 else 0.0


def outline_iou(a: list[list[float]], b: list[list[float]]) -> float:
    """Intersection over union of two outlines (lists of parts)."""
    return shape_iou(outline_shape(a), outline_shape(b))


def category_scores(truth: dict[str, set[str]], predicted: dict[str, set[str]]) -> dict:
    """Micro precision, recall and F1 over (image, category) pairs; an image missing from one side
    counts as having no categories there."""
    tp = fp = fn = 0
    for image in truth.keys() | predicted.keys():
        t, p = set(truth.get(image, ())), set(predicted.get(image, ()))
        tp += len(t & p)
        fp += len(p - t)
        fn += len(t - p)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def instance_counts(truth: dict[tuple[str, str], int], predicted: dict[tuple[str, str], int]) -> dict:
    """Over the (image, category) pairs either side names (a missing side counts 0): the share
    counted exactly, and the mean absolute error of the count."""
    pairs = truth.keys() | predicted.keys()
    if not pairs:
        return {"exact": 1.0, "mae": 0.0, "pairs": 0}
    errors = [abs(truth.get(k, 0) - predicted.get(k, 0)) for k in pairs]
    return {"exact": sum(e == 0 for e in errors) / len(errors), "mae": sum(errors) / len(errors),
            "pairs": len(errors)}


def _greedy_match(truth: list[BaseGeometry], predicted: list[BaseGeometry]) -> list[float]:
    """Best IoU per truth object, pairing the highest IoU first, each outline used once (0 = none)."""
    scores = sorted(((shape_iou(t, p), i, j) for i, t in enumerate(truth) for j, p in enumerate(predicted)),
                    key=lambda s: (-s[0], s[1], s[2]))
    best = [0.0] * len(truth)
    used_t: set[int] = set()
    used_p: set[int] = set()
    for iou, i, j in scores:
        if iou <= 0:
            break
        if i in used_t or j in used_p:
            continue
        used_t.add(i)
        used_p.add(j)
        best[i] = iou
    return best


def outline_scores(truth: dict[tuple[str, str], list[list[list[float]]]],
                   predicted: dict[tuple[str, str], list[list[list[float]]]]) -> dict:
    """Per (image, category), match predicted outlines to truth objects greedily by IoU.

    mean_iou: over all truth objects, an unmatched one scoring 0; matched_mean_iou: over matched
    ones only; share_iou_50 / share_iou_75: share of truth objects matched at IoU >= 0.5 / 0.75.
    """
    ious: list[float] = []
    n_predicted = 0
    for key in truth.keys() | predicted.keys():
        t = [outline_shape(o) for o in truth.get(key, [])]
        p = [outline_shape(o) for o in predicted.get(key, [])]
        n_predicted += len(p)
        ious.extend(_greedy_match(t, p))
    matched = [v for v in ious if v > 0]
    n = len(ious)
    return {
        "mean_iou": sum(ious) / n if n else 0.0,
        "matched_mean_iou": sum(matched) / len(matched) if matched else 0.0,
        "share_iou_50": sum(v >= 0.5 for v in ious) / n if n else 0.0,
        "share_iou_75": sum(v >= 0.75 for v in ious) / n if n else 0.0,
        "n_truth": n,
        "n_predicted": n_predicted,
    }
