"""Constraints of the datasets models and COCO's categories, on a real database."""
from __future__ import annotations

from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from datasets.models import Category, Image
from datasets.services.categories import categories_add, categories_add_coco, coco_categories, parse_category_entries
from tests.factories import CategoryFactory, ImageFactory, ProjectFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


def test_category_coco_id_is_unique_per_project():
    first = CategoryFactory(coco_id=7, name="train")
    with pytest.raises(IntegrityError), transaction.atomic():
        Category.objects.create(project=first.project, coco_id=7, name="tram")
    Category.objects.create(project=ProjectFactory(), coco_id=7, name="tram")  # another project: fine


def test_category_name_is_unique_per_project():
    first = CategoryFactory(coco_id=1, name="cat")
    with pytest.raises(IntegrityError), transaction.atomic():
        Category.objects.create(project=first.project, coco_id=2, name="cat")


def test_category_coco_id_must_be_positive():
    project = ProjectFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Category.objects.create(project=project, coco_id=0, name="nothing")


def test_coco_has_80_categories_in_12_supercategories_with_coco_ids():
    entries = coco_categories()
    assert len(entries) == 80
    supers = Counter(e["supercategory"] for e in entries)
    assert len(supers) == 12
    assert supers["animal"] == 10 and supers["vehicle"] == 8
    ids = [e["id"] for e in entries]
    assert ids[0] == 1 and ids[-1] == 90 and len(set(ids)) == 80
    assert {e["name"] for e in entries} >= {"person", "bicycle", "toothbrush", "hair drier"}


def test_adding_coco_twice_adds_nothing_the_second_time():
    project = ProjectFactory()
    assert categories_add_coco(project=project) == (80, 0)
    assert categories_add_coco(project=project) == (0, 80)
    assert project.categories.values("supercategory").distinct().count() == 12
    assert project.categories.get(coco_id=1).name == "person"


def test_category_clash_adds_nothing():
    project = ProjectFactory()
    categories_add(project=project, entries=[{"id": 1, "name": "person"}])
    with pytest.raises(ValidationError, match="already 'person'"):
        categories_add(project=project, entries=[{"id": 2, "name": "dog"}, {"id": 1, "name": "human"}])
    assert list(project.categories.values_list("name", flat=True)) == ["person"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "non-empty list"),
        ([{"name": ""}], "'name' must be a text"),
        ([{"name": "a"}, {"name": "a"}], "appears twice"),
        ([{"id": 0, "name": "a"}], "positive integer"),
        ([{"id": True, "name": "a"}], "positive integer"),
        (["cat"], "expected an object"),
    ],
)
def test_category_entries_are_checked(data, message):
    with pytest.raises(ValidationError, match=message):
        parse_category_entries(data)


def test_category_ids_are_numbered_after_the_largest_given():
    cleaned = parse_category_entries({"categories": [{"name": "a"}, {"id": 10, "name": "b"}, {"name": "c"}]})
    assert [(c["id"], c["name"]) for c in cleaned] == [(11, "a"), (10, "b"), (12, "c")]


def test_image_content_is_unique_per_project():
    image = ImageFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Image.objects.create(
            project=image.project, file="x.png", width=1, height=1, format="PNG", file_size=1,
            sha256=image.sha256, original_name="copy.png",
        )


def test_image_must_have_a_size():
    project = ProjectFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Image.objects.create(
            project=project, file="x.png", width=0, height=10, format="PNG", file_size=1, sha256="0" * 64,
            original_name="flat.png",
        )


def test_image_factory_stores_real_matching_bytes():
    import hashlib

    image = ImageFactory(width=20, height=10)
    with image.file.open("rb") as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == image.sha256 and len(data) == image.file_size
    other = ImageFactory(project=image.project, width=20, height=10)
    assert other.sha256 != image.sha256
