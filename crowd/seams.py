"""Where the crowd layer meets the labeling tools (``frontend``), kept in one place.

- ``task_url_for``: the URL a HIT's ExternalQuestion points at. It uses the tools'
  ``frontend.services.task_create`` when the frontend app provides it; otherwise it builds
  ``PUBLIC_BASE_URL/tasks/<kind>/<token>/`` itself. Point it elsewhere here, and only here.
- ``stored_answers`` / ``unseen_stored_answers``: the answers our server stored when a worker
  submitted (``frontend.models.TaskAnswer``), looked up by assignment id, to reconcile with
  what the marketplace reports.
- ``answers_for_tasks``: every stored answer of some task items, for the pipeline's decisions.
- ``training_passes``: workers who passed the project's training (``TrainingResult``), to be
  granted the project's training qualification.

Nothing else in ``crowd`` imports ``frontend``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from django.apps import apps
from django.conf import settings
from django.core import signing

_FALLBACK_SALT = "crowd.task"


def _frontend_services():
    if not apps.is_installed("frontend"):
        return None
    try:
        module = importlib.import_module("frontend.services")
    except ImportError:
        return None
    return module if hasattr(module, "task_create") else None


def _task_answer_model():
    try:
        return apps.get_model("frontend", "TaskAnswer")
    except LookupError:
        return None


def frontend_answers_available() -> bool:
    return _task_answer_model() is not None


def task_kwargs(kind: str, items: list[Any]) -> dict[str, Any]:
    """How a HIT's items map onto the tools' ``task_create`` arguments."""
    if kind == "categories":
        return {"images": items}
    if kind in ("verification", "training"):
        return {"polygons": items}
    if kind == "segmentation":  # a point id, or [point id, attempt] when the pipeline redraws it
        first = items[0]
        return {"point": first[0] if isinstance(first, (list, tuple)) else first}
    if kind == "spotting":  # one [image id, category id] pair
        image, category = items[0]
        return {"images": [image], "category": category}
    raise ValueError(f"unknown task kind {kind!r}")


def task_url_for(*, project: Any, kind: str, items: list[Any], token: str) -> tuple[str, int | None]:
    """Return (task page URL, frontend TaskItem id or None) for a HIT carrying ``items``."""
    services = _frontend_services()
    if services is not None:
        item = services.task_item_create(kind=kind, project=project, **task_kwargs(kind, items)) \
            if hasattr(services, "task_item_create") else None
        if item is not None:
            return services.task_url(task=item), item.pk
        return services.task_create(kind=kind, project=project, **task_kwargs(kind, items)), None
    signed = signing.Signer(salt=_FALLBACK_SALT).sign(token)
    return f"{settings.PUBLIC_BASE_URL}/tasks/{kind}/{signed}/", None


@dataclass
class StoredAnswer:
    id: int
    assignment_id: str
    worker_id: str
    hit_id: str
    answer: Any
    task_ref: int | None
    created_at: datetime


def _stored(row: Any) -> StoredAnswer:
    return StoredAnswer(id=row.pk, assignment_id=row.assignment_id, worker_id=row.worker_id, hit_id=row.hit_id,
                        answer=row.answer, task_ref=row.task_id, created_at=row.created_at)


def stored_answers(assignment_ids: Iterable[str]) -> dict[str, StoredAnswer]:
    """The latest stored answer of each assignment id (one query)."""
    model = _task_answer_model()
    ids = list(assignment_ids)
    if model is None or not ids:
        return {}
    out: dict[str, StoredAnswer] = {}
    for row in model.objects.filter(assignment_id__in=ids).order_by("assignment_id", "attempt", "id"):
        out[row.assignment_id] = _stored(row)
    return out


def unseen_stored_answers(*, known: Any, since: datetime, limit: int = 1000) -> list[StoredAnswer]:
    """Stored answers newer than ``since`` whose assignment id is not in the ``known`` queryset."""
    model = _task_answer_model()
    if model is None:
        return []
    # "direct-<user id>" answers come from signed-in users who opened a task outside any HIT.
    rows = (model.objects.filter(created_at__gte=since).exclude(assignment_id__in=known)
            .exclude(assignment_id__startswith="direct-").order_by("id")[:limit])
    return [_stored(r) for r in rows]


def training_passes(*, since: datetime, limit: int = 1000) -> list[tuple[int, str]]:
    """(project id, worker id) of passed training attempts newer than ``since``."""
    try:
        model = apps.get_model("frontend", "TrainingResult")
    except LookupError:
        return []
    rows = model.objects.filter(passed=True, created_at__gte=since).order_by("id")[:limit]
    return [(r.project_id, r.worker_id) for r in rows]


def answers_for_tasks(task_refs: Iterable[int]) -> dict[int, list[StoredAnswer]]:
    """Each task item's stored answers (first attempt per assignment), oldest first (one query)."""
    model = _task_answer_model()
    refs = [r for r in task_refs if r is not None]
    if model is None or not refs:
        return {}
    out: dict[int, list[StoredAnswer]] = {r: [] for r in refs}
    seen: set[tuple[int, str]] = set()
    for row in model.objects.filter(task_id__in=refs).order_by("id"):
        if (row.task_id, row.assignment_id) in seen:
            continue
        seen.add((row.task_id, row.assignment_id))
        out[row.task_id].append(_stored(row))
    return out
