"""Categories: COCO 2017's 80 built in, or a project's own from the admin or a JSON file."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from datasets.models import Category, Project

COCO_CATEGORIES_FILE = Path(__file__).resolve().parent.parent / "data" / "coco2017_categories.json"


@cache
def coco_categories() -> tuple[dict[str, Any], ...]:
    """COCO 2017's 80 categories: ``{"id", "name", "supercategory"}`` with COCO's own ids."""
    return tuple(json.loads(COCO_CATEGORIES_FILE.read_text()))


def parse_category_entries(data: Any) -> list[dict[str, Any]]:
    """Check a list of categories as COCO writes them and return it cleaned.

    Accepts a list, or a COCO file (a dict with a ``categories`` list). Each entry needs a
    ``name``; ``supercategory`` is optional; ``id`` is optional and, when missing, is numbered
    after the largest id given. Raises ValidationError naming the bad entry.
    """
    if isinstance(data, dict) and "categories" in data:
        data = data["categories"]
    if not isinstance(data, list) or not data:
        raise ValidationError("Expected a non-empty list of categories (or a COCO file with 'categories').")
    cleaned: list[dict[str, Any]] = []
    names: set[str] = set()
    ids: set[int] = set()
    for index, entry in enumerate(data, start=1):
        if not isinstance(entry, dict):
            raise ValidationError(f"Category #{index}: expected an object, got {type(entry).__name__}.")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ValidationError(f"Category #{index}: 'name' must be a text of 1 to 100 characters.")
        name = name.strip()
        if name in names:
            raise ValidationError(f"Category #{index}: the name {name!r} appears twice.")
        sup = entry.get("supercategory", "") or ""
        if not isinstance(sup, str) or len(sup) > 100:
            raise ValidationError(f"Category #{index} ({name}): 'supercategory' must be a short text.")
        cid = entry.get("id")
        if cid is not None:
            if isinstance(cid, bool) or not isinstance(cid, int) or cid < 1:
                raise ValidationError(f"Category #{index} ({name}): 'id' must be a positive integer.")
            if cid in ids:
                raise ValidationError(f"Category #{index} ({name}): the id {cid} appears twice.")
            ids.add(cid)
        names.add(name)
        cleaned.append({"id": cid, "name": name, "supercategory": sup.strip()})
    next_id = max(ids, default=0) + 1
    for entry in cleaned:
        if entry["id"] is None:
            entry["id"] = next_id
            next_id += 1
    return cleaned


@transaction.atomic
def categories_add(*, project: Project, entries: Any) -> tuple[int, int]:
    """Add categories to a project; entries already there (same id and name) are kept.

    Returns ``(created, unchanged)``. A clash (same id with another name, or same name with
    another id) raises ValidationError and adds nothing.
    """
    cleaned = parse_category_entries(entries)
    existing = {c.coco_id: c for c in Category.objects.filter(project=project)}
    by_name = {c.name: c for c in existing.values()}
    to_create: list[Category] = []
    unchanged = 0
    for entry in cleaned:
        have = existing.get(entry["id"])
        if have is not None:
            if have.name != entry["name"]:
                raise ValidationError(
                    f"Category id {entry['id']} is already {have.name!r} in this project, not {entry['name']!r}."
                )
            unchanged += 1
            continue
        if entry["name"] in by_name:
            raise ValidationError(
                f"Category {entry['name']!r} already exists with id {by_name[entry['name']].coco_id}."
            )
        to_create.append(
            Category(project=project, coco_id=entry["id"], name=entry["name"], supercategory=entry["supercategory"])
        )
    Category.objects.bulk_create(to_create)
    return len(to_create), unchanged


def categories_add_coco(*, project: Project) -> tuple[int, int]:
    """Give a project COCO 2017's 80 categories with their 12 supercategories and ids."""
    return categories_add(project=project, entries=list(coco_categories()))
