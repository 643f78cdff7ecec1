"""Read queries of the labeling tools: what a task page needs to show."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from shapely.geometry import Polygon as ShapelyPolygon

from datasets.models import Category, Image, Polygon
from annotator.prepared import PreparedQuery
from frontend import clock
from frontend.answers import SCHEMA_VERSION, schema_name
from frontend.models import Kind, TaskAnswer, TaskItem, TrainingResult

MAX_EXISTING_OUTLINES = 5000


def _image(image: Image) -> dict[str, Any]:
    return {"id": image.pk, "url": image.file.url, "width": image.width, "height": image.height}


def _category(c: Category) -> dict[str, Any]:
    return {"id": c.pk, "name": c.name, "supercategory": c.supercategory,
            "example": c.example_image.url if c.example_image else ""}


def _images_in_order(ids: list[int]) -> list[dict[str, Any]]:
    if 0 < len(ids) <= _PREPARED_IMAGE_COUNTS and all(type(i) is int for i in ids):
        found = _images_query(len(ids)).all(*ids)
    else:
        found = _images_by_ids(*ids)
    by_id = {i.pk: i for i in found}  # put in order below
    return [_image(by_id[i]) for i in ids if i in by_id]


def _images_by_ids(*ids: int):
    return Image.objects.filter(pk__in=ids).only("id", "file", "width", "height").order_by()


# One compiled query per number of images (a project's tasks mostly have one size).
_PREPARED_IMAGE_COUNTS = 64
_IMAGE_QUERIES: dict[int, PreparedQuery] = {}


def _images_query(count: int) -> PreparedQuery:
    query = _IMAGE_QUERIES.get(count)
    if query is None:
        query = _IMAGE_QUERIES.setdefault(count, PreparedQuery(_images_by_ids, *([int] * count)))
    return query


def _supercategories(categories: list[Category]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for c in categories:
        name = c.supercategory or "other"
        g = groups.setdefault(name, {"name": name, "example": "", "categories": []})
        if c.example_image and not g["example"]:
            g["example"] = c.example_image.url
        g["categories"].append(_category(c))
    return list(groups.values())


def training_status(*, project_id: int, worker_id: str) -> dict[str, Any]:
    """The worker's standing in a project's training: passed, and when they may retry."""
    if not worker_id:
        return {"passed": False, "retry_at": None, "last": None}
    last = TrainingResult.objects.filter(project_id=project_id, worker_id=worker_id).order_by("-created_at").first()
    if last is None:
        return {"passed": False, "retry_at": None, "last": None}
    retry_at = None
    if not last.passed:
        at = last.created_at + timedelta(minutes=settings.TOOLS_TRAINING_RETRY_MINUTES)
        retry_at = at.isoformat() if at > clock.now() else None
    return {"passed": last.passed, "retry_at": retry_at,
            "last": {"passed": last.passed, "ious": last.ious, "threshold": last.threshold}}


def worker_passed_training(*, project_id: int, worker_id: str) -> bool:
    """For the crowd layer: whether a worker has a passing training result in a project."""
    return TrainingResult.objects.filter(project_id=project_id, worker_id=worker_id, passed=True).exists()


def stored_answer(*, task: TaskItem, assignment_id: str) -> TaskAnswer | None:
    if not assignment_id:
        return None
    return _latest_answer.first(task.pk, assignment_id)


_latest_answer = PreparedQuery(
    lambda task_id, assignment_id: TaskAnswer.objects.filter(task_id=task_id, assignment_id=assignment_id)
    .order_by("-attempt")[:1],
    int, str)


def project_categories(project_id: int) -> list[Category]:
    """A project's categories in their usual order (project, coco_id), without joining the project."""
    return _project_categories.all(project_id)


_project_categories = PreparedQuery(lambda project_id: Category.objects.filter(project_id=project_id)
                                    .order_by("coco_id"), int)


def task_context(*, task: TaskItem, worker_id: str = "") -> dict[str, Any]:
    """Everything a tool needs to draw its task, as plain JSON-ready data (never gold outlines)."""
    data: dict[str, Any] = {
        "kind": task.kind,
        "task": task.pk,
        "project": {"id": task.project_id, "name": task.project.name},
        "schema": schema_name(task.kind),
        "version": SCHEMA_VERSION,
    }
    if task.kind == Kind.CATEGORIES:
        data["images"] = _images_in_order(task.image_ids)
        data["supercategories"] = _supercategories(project_categories(task.project_id))
    elif task.kind == Kind.SPOTTING:
        data["image"] = _images_in_order(task.image_ids)[0]
        data["category"] = _category(task.category)
        data["crowd_threshold"] = settings.TOOLS_SPOTTING_CROWD_THRESHOLD
        data["max_points"] = settings.TOOLS_SPOTTING_MAX_POINTS
    elif task.kind == Kind.SEGMENTATION:
        point = task.point
        image = Image.objects.get(pk=point.image_id)
        data["image"] = _image(image)
        data["category"] = _category(Category.objects.get(pk=point.category_id))
        data["point"] = {"id": point.pk, "x": point.x, "y": point.y}
        others = Polygon.objects.filter(image=image).exclude(status=Polygon.Status.REJECTED)
        data["existing"] = [p for p in others.values_list("parts", flat=True)[:MAX_EXISTING_OUTLINES]]
        data["max_vertices"] = settings.TOOLS_MAX_VERTICES_PER_PART
    elif task.kind == Kind.VERIFICATION:
        polygons = {p.pk: p for p in Polygon.objects.select_related("image", "category").filter(pk__in=task.polygon_ids)}
        data["polygons"] = [
            {"id": pk, "image": _image(polygons[pk].image), "category": _category(polygons[pk].category),
             "parts": polygons[pk].parts, "bbox": polygons[pk].bbox}
            for pk in task.polygon_ids if pk in polygons
        ]
    elif task.kind == Kind.TRAINING:
        polygons = {p.pk: p for p in Polygon.objects.select_related("image", "category").filter(pk__in=task.polygon_ids)}
        items = []
        for pk in task.polygon_ids:
            p = polygons[pk]
            hint = ShapelyPolygon(list(zip(p.parts[0][0::2], p.parts[0][1::2]))).representative_point()
            items.append({"id": pk, "image": _image(p.image), "category": _category(p.category),
                          "point": {"x": round(hint.x, 2), "y": round(hint.y, 2)}})
        data["items"] = items
        data["threshold"] = settings.TOOLS_TRAINING_IOU
        data["retry_minutes"] = settings.TOOLS_TRAINING_RETRY_MINUTES
        data["status"] = training_status(project_id=task.project_id, worker_id=worker_id)
        data["max_vertices"] = settings.TOOLS_MAX_VERTICES_PER_PART
    return data


def answer_response(*, answer: TaskAnswer, created: bool) -> dict[str, Any]:
    """What the answer endpoint sends back (also for a repeated submission)."""
    body: dict[str, Any] = {"ok": True, "answer": answer.pk, "created": created, "summary": answer.summary,
                            "attempt": answer.attempt}
    # Only training answers are scored; the others have no result to look up.
    result = TrainingResult.objects.filter(answer=answer).first() if answer.kind == Kind.TRAINING else None
    if result is not None:
        retry_at = None
        if not result.passed:
            retry_at = (result.created_at + timedelta(minutes=settings.TOOLS_TRAINING_RETRY_MINUTES)).isoformat()
        body["training"] = {"passed": result.passed, "ious": result.ious, "threshold": result.threshold,
                            "retry_at": retry_at}
    return body

