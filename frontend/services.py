"""What the labeling tools change: task items (the crowd layer's entry point) and answers.

``task_create`` is the contract with the crowd layer: it records which tool works on which
things and returns the URL a HIT's ExternalQuestion points at. ``answer_submit`` validates an
answer, stores it, and writes the stage records into ``datasets`` in one transaction.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Iterable

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.urls import reverse
from shapely import make_valid
from shapely.geometry import MultiPolygon
from shapely.geometry import Polygon as ShapelyPolygon

from datasets.models import Category, Image, ImageLabel, InstancePoint, Polygon, Project, Stage
from annotator.announce import announce
from annotator.prepared import PreparedInsert, PreparedQuery, save_new, save_new_with
from frontend import clock
from frontend.answers import SCHEMA_VERSION, AnswerError, CleanAnswer, answer_clean
from frontend.models import Kind, TaskAnswer, TaskItem, TrainingResult, VerificationVote

logger = logging.getLogger(__name__)
PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE"
_TOKEN_SALT = "frontend.task"


class TaskError(ValueError):
    """A task that cannot be made from the items given."""


# --- Task items: the crowd layer's entry point -------------------------------------------------

def task_token(*, task: TaskItem) -> str:
    """A signed token naming the task (its kind and id); it cannot be guessed or altered."""
    return signing.Signer(salt=_TOKEN_SALT).sign(f"{task.kind}-{task.pk}")


def task_from_token(*, kind: str, token: str) -> TaskItem | None:
    try:
        value = signing.Signer(salt=_TOKEN_SALT).unsign(token)
    except signing.BadSignature:
        return None
    token_kind, _, pk = value.rpartition("-")
    if token_kind != kind or not pk.isdigit():
        return None
    query = _TASK_BY_KIND.get(kind)
    return query.first(int(pk)) if query is not None else None


def _task_query(kind: str) -> PreparedQuery:
    # Only the relations this kind of task uses (the kind is in the token).
    related = ["project"] + (["category"] if kind == Kind.SPOTTING else []) + (["point"] if kind == Kind.SEGMENTATION else [])
    return PreparedQuery(lambda pk: TaskItem.objects.select_related(*related).filter(pk=pk, kind=kind).order_by()[:1],
                         int)


# Every task page and answer starts here: one query per kind, compiled once per process.
_TASK_BY_KIND = {kind: _task_query(kind) for kind in Kind.values}


def task_path(*, task: TaskItem) -> str:
    return reverse("frontend:task", kwargs={"kind": task.kind, "token": task_token(task=task)})


def task_url(*, task: TaskItem) -> str:
    return settings.PUBLIC_BASE_URL + task_path(task=task)


def _ids(values: Iterable[Any], what: str) -> list[int]:
    ids = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            v = getattr(v, "pk", v)
        if not isinstance(v, int):
            raise TaskError(f"{what}: {v!r} is not an id.")
        if v in ids:
            raise TaskError(f"{what}: {v} is listed twice.")
        ids.append(v)
    return ids


@transaction.atomic
def task_item_create(
    *,
    kind: str,
    project: Project,
    images: Iterable[Image | int] = (),
    category: Category | int | None = None,
    point: InstancePoint | int | None = None,
    polygons: Iterable[Polygon | int] = (),
    assignment_id: str = "",
) -> TaskItem:
    """Record a unit of work for one tool; every item must belong to ``project``.

    categories: ``images`` (a batch); spotting: ``images`` (exactly one) and ``category``;
    segmentation: ``point``; verification: ``polygons``; training: ``polygons`` with known
    (gold) outlines.
    """
    if kind not in Kind.values:
        raise TaskError(f"Unknown tool {kind!r}; one of {', '.join(Kind.values)}.")
    image_ids = _ids(images, "images")
    polygon_ids = _ids(polygons, "polygons")
    category_id = getattr(category, "pk", category)
    point_id = getattr(point, "pk", point)
    if image_ids and Image.objects.filter(project=project, pk__in=image_ids).count() != len(image_ids):
        raise TaskError("Some images are not images of this project.")
    if polygon_ids and Polygon.objects.filter(image__project=project, pk__in=polygon_ids).count() != len(polygon_ids):
        raise TaskError("Some outlines are not outlines of this project.")
    if category_id is not None and not Category.objects.filter(project=project, pk=category_id).exists():
        raise TaskError("The category is not a category of this project.")
    if point_id is not None and not InstancePoint.objects.filter(image__project=project, pk=point_id).exists():
        raise TaskError("The point is not a point of this project.")
    need = {
        Kind.CATEGORIES: bool(image_ids),
        Kind.SPOTTING: len(image_ids) == 1 and category_id is not None,
        Kind.SEGMENTATION: point_id is not None,
        Kind.VERIFICATION: bool(polygon_ids),
        Kind.TRAINING: bool(polygon_ids),
    }
    if not need[kind]:
        raise TaskError(
            {
                Kind.CATEGORIES: "A category labeling task needs one or more images.",
                Kind.SPOTTING: "A spotting task needs exactly one image and a category.",
                Kind.SEGMENTATION: "A segmentation task needs the spotted point to outline.",
                Kind.VERIFICATION: "A verification task needs one or more outlines.",
                Kind.TRAINING: "A training task needs one or more known outlines.",
            }[kind]
        )
    return TaskItem.objects.create(
        kind=kind,
        project=project,
        image_ids=image_ids,
        category_id=category_id,
        point_id=point_id,
        polygon_ids=polygon_ids,
        assignment_id=assignment_id or "",
    )


def task_create(**kwargs: Any) -> str:
    """Make a task item (see ``task_item_create``) and return its absolute URL.

    The crowd layer puts this URL in a HIT's ExternalQuestion; MTurk (or our marketplace) adds
    ``assignmentId``, ``hitId``, ``workerId`` and ``turkSubmitTo`` to the query string.
    """
    return task_url(task=task_item_create(**kwargs))


# --- Answers -------------------------------------------------------------------------------------

def _training_lock(*, project_id: int, worker_id: str):
    """The time a worker may try training again, or None when nothing holds them back."""
    last = TrainingResult.objects.filter(project_id=project_id, worker_id=worker_id).order_by("-created_at").first()
    if last is None or last.passed:
        return None
    retry_at = last.created_at + timedelta(minutes=settings.TOOLS_TRAINING_RETRY_MINUTES)
    return retry_at if retry_at > clock.now() else None


def _shape(parts: list[list[float]]):
    shapes = [ShapelyPolygon(list(zip(p[0::2], p[1::2]))) for p in parts]
    return make_valid(MultiPolygon(shapes)) if len(shapes) > 1 else shapes[0]


def outline_iou(a: list[list[float]], b: list[list[float]]) -> float:
    sa, sb = _shape(a), _shape(b)
    union = sa.union(sb).area
    return float(sa.intersection(sb).area / union) if union > 0 else 0.0


def _write_records(*, task: TaskItem, stored: TaskAnswer, clean: CleanAnswer) -> None:
    who = {"made_by": stored.worker_id, "assignment_ref": stored.assignment_id, "schema_version": SCHEMA_VERSION}
    data = clean.data
    if task.kind == Kind.CATEGORIES:
        _insert_labels.insert(_label_rows(stored, clean))
    elif task.kind == Kind.SPOTTING:
        InstancePoint.objects.bulk_create(
            InstancePoint(image_id=data["image"], category_id=data["category"], x=p["x"], y=p["y"],
                          is_crowd=data["crowd"], stage=Stage.SPOTTING, **who)
            for p in data["points"]
        )
    elif task.kind == Kind.SEGMENTATION:
        point = task.point
        outline = clean.outlines[point.pk]
        Polygon.objects.create(
            image_id=point.image_id, category_id=point.category_id, point=point, parts=outline.parts,
            area=outline.area, bbox=outline.bbox, is_crowd=point.is_crowd, stage=Stage.SEGMENTATION, **who,
        )
    elif task.kind == Kind.VERIFICATION:
        VerificationVote.objects.bulk_create(
            VerificationVote(answer=stored, polygon_id=d["polygon"], accept=d["accept"], **who)
            for d in data["decisions"]
        )
    elif task.kind == Kind.TRAINING:
        golds = {p.pk: p for p in Polygon.objects.filter(pk__in=task.polygon_ids)}
        threshold = settings.TOOLS_TRAINING_IOU
        ious = []
        for item in data["items"]:
            iou = outline_iou(item["parts"], golds[item["item"]].parts)
            ious.append({"item": item["item"], "iou": round(iou, 4), "passed": iou >= threshold})
        TrainingResult.objects.create(
            project=task.project, worker_id=stored.worker_id, answer=stored,
            passed=all(i["passed"] for i in ious), min_iou=min(i["iou"] for i in ious),
            threshold=threshold, ious=ious, created_at=clock.now(),
        )


# Every category answer writes a label per image and category: one statement from SQL built once.
def _label_rows(stored: TaskAnswer, clean: CleanAnswer) -> list[tuple]:
    """A category answer's labels: one per image and category of the project (read once, when
    the answer was checked), present or not."""
    made_by, ref = stored.worker_id, stored.assignment_id
    return [(e["image"], c, c in e["present"], Stage.CATEGORIES, made_by, ref, SCHEMA_VERSION)
            for e in clean.data["images"] for c in clean.category_ids]


_insert_labels = PreparedInsert(ImageLabel, ["image", "category", "present", "stage", "made_by", "assignment_ref",
                                             "schema_version"])


def answer_announce(*, task_id: int) -> None:
    """Queue the Celery tasks named in ``TOOLS_ANSWER_TASKS`` (the pipeline's) for a stored answer.

    By name, so the tools need not import who listens; through Redis, many answers share one
    message (``annotator.announce``). A broker that cannot be reached loses nothing: the answer
    is stored, and the pipeline's beat catch-up finds it.
    """
    for name in settings.TOOLS_ANSWER_TASKS:
        try:
            # No publish retries: with the broker down the worker's answer must not wait on it.
            announce(name, task_id)
        except Exception as exc:  # noqa: BLE001 - the broker's errors vary by transport
            logger.warning("could not queue %s for task item %s: %s", name, task_id, exc)


_answer_of_attempt = PreparedQuery(
    lambda task_id, assignment_id, attempt: TaskAnswer.objects.filter(
        task_id=task_id, assignment_id=assignment_id, attempt=attempt).order_by("pk")[:1],
    int, str, int)


def answer_submit(
    *, task: TaskItem, worker_id: str, assignment_id: str, hit_id: str = "", answer: Any
) -> tuple[TaskAnswer, bool]:
    """Validate and store an answer; returns ``(answer, created)``.

    A repeated submission for the same assignment (and training attempt) returns the stored
    answer. Raises AnswerError (nothing stored) for an answer this task cannot take.
    """
    worker_id, assignment_id, hit_id = (str(v or "").strip()[:128] for v in (worker_id, assignment_id, hit_id))
    if not assignment_id or assignment_id == PREVIEW_ASSIGNMENT:
        raise AnswerError("This is a preview: accept the HIT before submitting.")
    if not worker_id:
        raise AnswerError("The worker id is missing.")
    if task.assignment_id and assignment_id != task.assignment_id:
        raise AnswerError("This task belongs to another assignment.")
    attempt = answer.get("attempt", 1) if isinstance(answer, dict) and task.kind == Kind.TRAINING else 1
    # A repeat is found before anything else for training (its attempts are numbered from what is
    # stored); for the other kinds, by the unique constraint when the insert below meets it, so
    # that a first answer (nearly every one) reads nothing more.
    if task.kind == Kind.TRAINING and isinstance(attempt, int) and not isinstance(attempt, bool):
        existing = _answer_of_attempt.first(task.pk, assignment_id, attempt)
        if existing is not None:
            return _repeat(existing, worker_id), False
    clean = answer_clean(task=task, answer=answer)
    if task.kind == Kind.TRAINING:
        attempt = clean.data["attempt"]
        earlier = TaskAnswer.objects.filter(task=task, assignment_id=assignment_id).count()
        if attempt != earlier + 1:
            raise AnswerError(f"This is attempt {earlier + 1}, not {attempt}; reload the page.")
        retry_at = _training_lock(project_id=task.project_id, worker_id=worker_id)
        if retry_at is not None:
            raise AnswerError(f"You may try the training again from {retry_at:%H:%M} UTC.")
    stored = TaskAnswer(
        task=task, kind=task.kind, schema_version=SCHEMA_VERSION, worker_id=worker_id,
        assignment_id=assignment_id, hit_id=hit_id, attempt=attempt, answer=clean.data, summary=clean.summary,
    )
    try:
        if task.kind == Kind.CATEGORIES:
            # The answer and its labels in one statement (no transaction of its own on PostgreSQL).
            save_new_with(stored, _insert_labels, _label_rows(stored, clean))
            transaction.on_commit(lambda: answer_announce(task_id=task.pk))
        else:
            with transaction.atomic():
                save_new(stored)
                _write_records(task=task, stored=stored, clean=clean)
                transaction.on_commit(lambda: answer_announce(task_id=task.pk))
    except IntegrityError:
        existing = _answer_of_attempt.first(task.pk, assignment_id, attempt)
        if existing is None:
            raise
        return _repeat(existing, worker_id), False
    return stored, True


def _repeat(existing: TaskAnswer, worker_id: str) -> TaskAnswer:
    """The stored answer a repeated submission gets back, if it is the same worker's."""
    if existing.worker_id != worker_id:
        raise AnswerError("This assignment was answered by another worker.")
    return existing
