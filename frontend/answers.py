"""The versioned answer schema of the labeling tools, and its validation.

Every answer names its schema and version::

    {"schema": "annotator.answer/<kind>", "version": 1, ...}

categories    {"images": [{"image": id, "present": [category id, ...]}, ...]}  every task image once
spotting      {"image": id, "category": id, "points": [{"x": float, "y": float}, ...], "crowd": bool}
segmentation  {"point": id, "parts": [[x1, y1, x2, y2, ...], ...]}
verification  {"decisions": [{"polygon": id, "accept": bool}, ...]}           every task outline once
training      {"attempt": int, "items": [{"item": polygon id, "parts": [[...], ...]}, ...]}

Coordinates are image pixels (after EXIF orientation). ``answer_clean`` checks an answer against
its task and returns it normalised, or raises ``AnswerError`` with a message for the worker.
Nothing here writes to the database.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from annotator.prepared import PreparedQuery
from datasets.models import Category, Image, InstancePoint, Polygon
from datasets.services.geometry import Outline, outline_check
from frontend.models import Kind, TaskItem

SCHEMA_VERSION = 1
SCHEMA_PREFIX = "annotator.answer/"
MAX_PARTS = 20


class AnswerError(ValueError):
    """An answer that cannot be stored, with a message meant for the person who sent it."""


@dataclass
class CleanAnswer:
    kind: str
    data: dict[str, Any]  # the normalised answer, as stored
    summary: str
    outlines: dict[int, Outline] = field(default_factory=dict)  # segmentation / training, by item
    category_ids: list[int] = field(default_factory=list)  # categories: the project's, as checked against


def schema_name(kind: str) -> str:
    return f"{SCHEMA_PREFIX}{kind}"


def _int_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AnswerError(f"{what} must be a positive integer id, got {value!r}.")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnswerError(f"{what} must be a finite number, got {value!r}.")
    return float(value)


def _object(value: Any, what: str, keys: set[str]) -> dict:
    if not isinstance(value, dict):
        raise AnswerError(f"{what} must be an object.")
    missing = keys - value.keys()
    if missing:
        raise AnswerError(f"{what} lacks {', '.join(sorted(missing))}.")
    return value


def _list(value: Any, what: str, *, max_len: int) -> list:
    if not isinstance(value, list):
        raise AnswerError(f"{what} must be a list.")
    if len(value) > max_len:
        raise AnswerError(f"{what} has {len(value)} entries, more than the limit of {max_len}.")
    return value


def _parts(value: Any, image: Image, what: str) -> Outline:
    parts = _list(value, f"{what}: parts", max_len=MAX_PARTS)
    limit = settings.TOOLS_MAX_VERTICES_PER_PART
    for i, part in enumerate(parts, start=1):
        if isinstance(part, list) and len(part) // 2 > limit:
            raise AnswerError(f"{what}: part {i} has {len(part) // 2} vertices, more than the limit of {limit}.")
    try:
        return outline_check(parts=parts, width=image.width, height=image.height)
    except ValidationError as exc:
        raise AnswerError(f"{what}: {' '.join(exc.messages)}") from None


def _header(kind: str, answer: Any) -> dict:
    if not isinstance(answer, dict):
        raise AnswerError("The answer must be a JSON object.")
    if answer.get("schema") != schema_name(kind):
        raise AnswerError(f"Unknown answer schema {answer.get('schema')!r}; this task expects {schema_name(kind)!r}.")
    version = answer.get("version")
    if version != SCHEMA_VERSION:
        raise AnswerError(
            f"Answer schema version {version!r} is not supported; this server reads version {SCHEMA_VERSION}. "
            "Reload the page to get the current tool."
        )
    return answer


# A project's category ids in their usual order; every category answer checks against them.
_category_ids = PreparedQuery(lambda project_id: Category.objects.filter(project_id=project_id)
                              .order_by("coco_id").values_list("id", flat=True), int)


def _categories(task: TaskItem, answer: dict) -> CleanAnswer:
    entries = _list(answer.get("images"), "images", max_len=len(task.image_ids))
    category_ids = _category_ids.all(task.project_id)
    known = set(category_ids)
    seen: dict[int, list[int]] = {}
    for i, entry in enumerate(entries, start=1):
        _object(entry, f"Image entry {i}", {"image", "present"})
        image_id = _int_id(entry["image"], f"Image entry {i}: image")
        if image_id not in task.image_ids:
            raise AnswerError(f"Image {image_id} is not part of this task.")
        if image_id in seen:
            raise AnswerError(f"Image {image_id} is answered twice.")
        present = _list(entry["present"], f"Image {image_id}: present", max_len=len(known))
        ids = sorted({_int_id(c, f"Image {image_id}: category") for c in present})
        if len(ids) != len(present):
            raise AnswerError(f"Image {image_id}: a category is listed twice.")
        stray = [c for c in ids if c not in known]
        if stray:
            raise AnswerError(f"Image {image_id}: category {stray[0]} is not a category of this project.")
        seen[image_id] = ids
    missing = [i for i in task.image_ids if i not in seen]
    if missing:
        raise AnswerError(f"Image {missing[0]} has no answer; every image of the task needs one.")
    data = {"images": [{"image": i, "present": seen[i]} for i in task.image_ids]}
    marked = sum(len(v) for v in seen.values())
    return CleanAnswer(Kind.CATEGORIES, data, f"{len(seen)} images, {marked} categories marked",
                       category_ids=category_ids)


def _spotting(task: TaskItem, answer: dict) -> CleanAnswer:
    _object(answer, "The answer", {"image", "category", "points", "crowd"})
    image_id = _int_id(answer["image"], "image")
    if image_id != task.image_ids[0]:
        raise AnswerError(f"Image {image_id} is not the image of this task.")
    if _int_id(answer["category"], "category") != task.category_id:
        raise AnswerError(f"Category {answer['category']} is not the category of this task.")
    image = Image.objects.get(pk=image_id)
    points = _list(answer["points"], "points", max_len=settings.TOOLS_SPOTTING_MAX_POINTS)
    crowd = answer["crowd"]
    if not isinstance(crowd, bool):
        raise AnswerError("crowd must be true or false.")
    clean = []
    for i, p in enumerate(points, start=1):
        _object(p, f"Point {i}", {"x", "y"})
        x, y = _number(p["x"], f"Point {i}: x"), _number(p["y"], f"Point {i}: y")
        if not (0 <= x <= image.width and 0 <= y <= image.height):
            raise AnswerError(f"Point {i} ({x:g}, {y:g}) lies outside the {image.width}x{image.height} image.")
        clean.append({"x": x, "y": y})
    threshold = settings.TOOLS_SPOTTING_CROWD_THRESHOLD
    if crowd and len(clean) < threshold:
        raise AnswerError(f"'Too many to count' needs at least {threshold} points clicked first.")
    data = {"image": image_id, "category": task.category_id, "points": clean, "crowd": crowd}
    summary = f"{len(clean)} points" + (" (too many to count)" if crowd else "")
    return CleanAnswer(Kind.SPOTTING, data, summary)


def _segmentation(task: TaskItem, answer: dict) -> CleanAnswer:
    _object(answer, "The answer", {"point", "parts"})
    if _int_id(answer["point"], "point") != task.point_id:
        raise AnswerError(f"Point {answer['point']} is not the instance of this task.")
    point = InstancePoint.objects.select_related("image").get(pk=task.point_id)
    outline = _parts(answer["parts"], point.image, "Outline")
    data = {"point": point.pk, "parts": outline.parts}
    vertices = sum(len(p) // 2 for p in outline.parts)
    return CleanAnswer(Kind.SEGMENTATION, data, f"{len(outline.parts)} parts, {vertices} vertices",
                       outlines={point.pk: outline})


def _verification(task: TaskItem, answer: dict) -> CleanAnswer:
    decisions = _list(answer.get("decisions"), "decisions", max_len=len(task.polygon_ids))
    seen: dict[int, bool] = {}
    for i, d in enumerate(decisions, start=1):
        _object(d, f"Decision {i}", {"polygon", "accept"})
        pid = _int_id(d["polygon"], f"Decision {i}: polygon")
        if pid not in task.polygon_ids:
            raise AnswerError(f"Outline {pid} is not part of this task.")
        if pid in seen:
            raise AnswerError(f"Outline {pid} is decided twice.")
        if not isinstance(d["accept"], bool):
            raise AnswerError(f"Decision {i}: accept must be true or false.")
        seen[pid] = d["accept"]
    missing = [p for p in task.polygon_ids if p not in seen]
    if missing:
        raise AnswerError(f"Outline {missing[0]} is not decided; accept or reject every outline.")
    data = {"decisions": [{"polygon": p, "accept": seen[p]} for p in task.polygon_ids]}
    accepted = sum(seen.values())
    return CleanAnswer(Kind.VERIFICATION, data, f"{accepted} accepted, {len(seen) - accepted} rejected")


def _training(task: TaskItem, answer: dict) -> CleanAnswer:
    attempt = answer.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or not 1 <= attempt <= 1000:
        raise AnswerError("attempt must be a whole number from 1.")
    items = _list(answer.get("items"), "items", max_len=len(task.polygon_ids))
    golds = {p.pk: p for p in Polygon.objects.select_related("image").filter(pk__in=task.polygon_ids)}
    outlines: dict[int, Outline] = {}
    for i, entry in enumerate(items, start=1):
        _object(entry, f"Item {i}", {"item", "parts"})
        pid = _int_id(entry["item"], f"Item {i}: item")
        if pid not in task.polygon_ids or pid not in golds:
            raise AnswerError(f"Item {pid} is not part of this training.")
        if pid in outlines:
            raise AnswerError(f"Item {pid} is answered twice.")
        outlines[pid] = _parts(entry["parts"], golds[pid].image, f"Item {i}")
    missing = [p for p in task.polygon_ids if p not in outlines]
    if missing:
        raise AnswerError(f"Item {task.polygon_ids.index(missing[0]) + 1} has no outline; outline every object.")
    data = {"attempt": attempt, "items": [{"item": p, "parts": outlines[p].parts} for p in task.polygon_ids]}
    return CleanAnswer(Kind.TRAINING, data, f"training attempt {attempt}", outlines=outlines)


_CLEANERS = {
    Kind.CATEGORIES: _categories,
    Kind.SPOTTING: _spotting,
    Kind.SEGMENTATION: _segmentation,
    Kind.VERIFICATION: _verification,
    Kind.TRAINING: _training,
}


def answer_clean(*, task: TaskItem, answer: Any) -> CleanAnswer:
    """Validate ``answer`` for ``task``; raise AnswerError naming the first problem."""
    return _CLEANERS[task.kind](task, _header(task.kind, answer))
