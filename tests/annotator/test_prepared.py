"""Queries compiled once (annotator/prepared.py) give exactly what the ORM gives.

On PostgreSQL they run from SQL compiled on first use; a query whose SQL depends on more than the
values passed in (a clock read inside it, an empty ``IN`` list) is caught at that first use and
runs through the ORM instead, with the same results. On SQLite every query runs through the ORM.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from annotator.prepared import PreparedQuery
from datasets.models import Category
from tests.factories import CategoryFactory, ProjectFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]



def fields_of(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields
            if f.attname not in obj.get_deferred_fields()}


@pytest.fixture
def two_projects():
    a, b = ProjectFactory(name="Alpha"), ProjectFactory(name="Beta")
    for i, name in enumerate(["zebra", "apple", "mango"]):
        CategoryFactory(project=a, coco_id=10 - i, name=name, supercategory=f"s{i}")
    CategoryFactory(project=b, coco_id=1, name="other")
    return a, b


def test_models_with_related_and_deferred_fields_match_the_orm(two_projects):
    a, b = two_projects
    build = (lambda project_id, name: Category.objects.select_related("project").defer("supercategory")
             .filter(project_id=project_id).exclude(name=name).order_by("coco_id"))
    query = PreparedQuery(build, int, str)
    for project, name in [(a, "apple"), (a, "nothing"), (b, "x"), (b, "other")]:
        expected = list(build(project.pk, name))
        got = query.all(project.pk, name)
        assert [fields_of(o) for o in got] == [fields_of(o) for o in expected]
        assert [o.get_deferred_fields() for o in got] == [{"supercategory"}] * len(expected)
        # the project came with the row: reading it makes no query
        with CaptureQueriesContext(connection) as ctx:
            assert [o.project.name for o in got] == [project.name] * len(expected)
        assert len(ctx) == 0
    assert query.prepared() == (connection.vendor == "postgresql")
    # deferred fields still load on access
    assert query.first(a.pk, "mango").supercategory == "s1"


def test_values_lists_flat_and_not_flat(two_projects):
    a, _ = two_projects
    flat = PreparedQuery(lambda pid: Category.objects.filter(project_id=pid).order_by("coco_id")
                         .values_list("name", flat=True), int)
    pairs = PreparedQuery(lambda pid: Category.objects.filter(project_id=pid).order_by("name")
                          .values_list("coco_id", "name"), int)
    assert flat.all(a.pk) == ["mango", "apple", "zebra"]
    assert pairs.all(a.pk) == [(9, "apple"), (8, "mango"), (10, "zebra")]
    assert flat.first(-1) is None


def test_one_query_per_call_and_the_same_sql_as_the_orm(two_projects):
    a, _ = two_projects
    build = lambda pid: Category.objects.filter(project_id=pid).order_by("coco_id")[:1]  # noqa: E731
    query = PreparedQuery(build, int)
    query.first(a.pk)  # compiles (on PostgreSQL)
    with CaptureQueriesContext(connection) as orm:
        list(build(a.pk))
    with CaptureQueriesContext(connection) as ours:
        assert query.first(a.pk).name == "mango"
    assert len(ours) == 1
    # PostgreSQL binds the value itself: the statement logged carries $1 where the ORM's has it.
    assert re.sub(r"\$1\b", str(a.pk), ours[0]["sql"]) == orm[0]["sql"]


@pytest.mark.postgres_only
def test_postgresql_binds_the_values_and_prepares_a_statement_run_often(two_projects, settings):
    a, b = two_projects
    query = PreparedQuery(lambda pid: Category.objects.filter(project_id=pid).order_by("coco_id")
                          .values_list("name", flat=True), int)

    def kept_plans():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                           ['%"datasets_category"."project_id" = $1%'])
            return cursor.fetchone()[0]

    with CaptureQueriesContext(connection) as sent:
        for _ in range(3):
            assert query.all(a.pk) == ["mango", "apple", "zebra"]
    assert "= $1" in sent[0]["sql"]
    assert kept_plans() == 1
    # The kept plan answers for other values as the ORM does.
    assert query.all(b.pk) == list(Category.objects.filter(project_id=b.pk).order_by("coco_id")
                                   .values_list("name", flat=True))
    # Switched off, values are spliced into the SQL text as Django's own cursors do.
    settings.PREPARED_STATEMENTS = False
    with CaptureQueriesContext(connection) as spliced:
        assert query.all(a.pk) == ["mango", "apple", "zebra"]
    assert f"= {a.pk} " in spliced[0]["sql"]


def test_a_value_hidden_in_the_build_is_caught_and_falls_back_to_the_orm(two_projects):
    a, _ = two_projects
    # The clock is read inside build: compiled once, it would freeze. It must be refused.
    hidden = PreparedQuery(lambda pid: Category.objects.filter(
        project_id=pid, project__created_at__lt=datetime.now(timezone.utc) + timedelta(days=1)).order_by("pk"), int)
    assert [c.name for c in hidden.all(a.pk)] == ["zebra", "apple", "mango"]
    assert not hidden.prepared()
    # An empty IN list compiles to no SQL at all: refused, and the ORM answers (nothing).
    empty = PreparedQuery(lambda pid: Category.objects.filter(project_id=pid, pk__in=[]), int)
    assert empty.all(a.pk) == []
    assert not empty.prepared()


def test_values_are_checked_and_row_locks_need_a_transaction(two_projects):
    a, _ = two_projects
    with pytest.raises(TypeError):
        PreparedQuery(lambda x: Category.objects.filter(pk=x), float)
    query = PreparedQuery(lambda pid: Category.objects.select_for_update().filter(project_id=pid)
                          .order_by("pk")[:1], int)
    with pytest.raises(TypeError):
        query.first()
    with transaction.atomic():
        assert query.first(a.pk).name == "zebra"


@pytest.mark.django_db(transaction=True)
def test_a_row_lock_outside_a_transaction_is_refused_as_django_refuses_it():
    project = ProjectFactory()
    CategoryFactory(project=project, name="locked")
    build = lambda pid: Category.objects.select_for_update().filter(project_id=pid).order_by("pk")[:1]  # noqa: E731
    query = PreparedQuery(build, int)
    if connection.vendor == "postgresql":  # SQLite takes no row locks, and Django lets it through
        with pytest.raises(TransactionManagementError):
            list(build(project.pk))
        with pytest.raises(TransactionManagementError):
            query.first(project.pk)
    with transaction.atomic():
        assert query.first(project.pk).name == "locked"


def test_datetime_values(two_projects):
    a, b = two_projects
    query = PreparedQuery(lambda when: Category.objects.filter(project__created_at__lt=when)
                          .order_by("pk").values_list("name", flat=True), datetime)
    assert query.all(datetime(2000, 1, 1, tzinfo=timezone.utc)) == []
    assert query.all(datetime.now(timezone.utc) + timedelta(minutes=1)) == ["zebra", "apple", "mango", "other"]


def test_every_query_of_the_task_flow_compiles_on_postgresql():
    """The worker's task flow (sign-in, accept, work page, task page, answer, submit) reads
    through these; one refused would silently cost its compilation on every request."""
    import crowd.marketplace.auth  # noqa: F401 - their queries are made at import
    import crowd.marketplace.services  # noqa: F401
    import frontend.answers  # noqa: F401
    import frontend.services  # noqa: F401
    from frontend.selectors import _images_query

    _images_query(2)
    names = [q.name for q in PreparedQuery.made]
    assert any(n.startswith("crowd.marketplace.auth") for n in names)
    assert any(n.startswith("frontend.services") for n in names)
    ours = [q for q in PreparedQuery.made if not q.name.startswith("tests.")]  # not the ones above
    refused = [q.name for q in ours if q.prepared() != (connection.vendor == "postgresql")]
    assert refused == []


def test_small_integer_columns_keep_their_driver_type():
    from frontend.models import TaskAnswer

    query = PreparedQuery(lambda attempt: TaskAnswer.objects.filter(attempt=attempt).order_by("pk")[:1], int)
    assert query.all(1) == []
    assert query.prepared() == (connection.vendor == "postgresql")


def test_prepared_insert_writes_what_bulk_create_writes():
    from annotator.prepared import PreparedInsert
    from datasets.models import ImageLabel, Stage
    from tests.factories import ImageFactory

    project = ProjectFactory()
    images = [ImageFactory(project=project) for _ in range(2)]
    categories = [CategoryFactory(project=project, coco_id=i + 1) for i in range(3)]
    rows = [(im.pk, c.pk, (i + j) % 2 == 0, Stage.CATEGORIES, "W1", "A1", 1)
            for i, im in enumerate(images) for j, c in enumerate(categories)]
    names = ["image", "category", "present", "stage", "made_by", "assignment_ref", "schema_version"]
    before = datetime.now(timezone.utc)
    with CaptureQueriesContext(connection) as ctx:
        PreparedInsert(ImageLabel, names).insert(rows)
    assert len(ctx) == 1
    attnames = ["image_id", "category_id"] + names[2:]
    ImageLabel.objects.bulk_create([ImageLabel(**{**dict(zip(attnames, row)), "made_by": "W2"}) for row in rows])

    def stored(made_by):
        return [{f: getattr(label, f) for f in ("image_id", "category_id", "present", "stage", "assignment_ref",
                                                "schema_version", "confidence")}
                for label in ImageLabel.objects.filter(made_by=made_by).order_by("image_id", "category_id")]

    assert stored("W1") == stored("W2") and len(stored("W1")) == 6
    assert all(label.created_at >= before for label in ImageLabel.objects.all())
    with pytest.raises(TypeError):
        PreparedInsert(ImageLabel, ["id", "image"])
    with pytest.raises(TypeError):
        PreparedInsert(ImageLabel, ["created_at"])


def test_prepared_insert_stores_text_exactly_whatever_its_characters():
    """On PostgreSQL the columns go as array text (``array_text``): quotes, backslashes, commas,
    braces, the word NULL and empty text must come back as they were sent."""
    from annotator.prepared import PreparedInsert
    from datasets.models import ImageLabel, Stage
    from tests.factories import ImageFactory

    project = ProjectFactory()
    image = ImageFactory(project=project)
    texts = ['a"b', "c\\d", "e,f", "{g}", "NULL", "", " spaced ", "ünï ✓", "h'i", '\\"', "x\ny"]
    categories = [CategoryFactory(project=project, coco_id=i + 1) for i in range(len(texts))]
    rows = [(image.pk, c.pk, i % 2 == 0, Stage.CATEGORIES, text, f"ref {text}", 1)
            for i, (c, text) in enumerate(zip(categories, texts))]
    PreparedInsert(ImageLabel, ["image", "category", "present", "stage", "made_by", "assignment_ref",
                                "schema_version"]).insert(rows)
    stored = list(ImageLabel.objects.filter(image=image).order_by("category__coco_id")
                  .values_list("made_by", "assignment_ref", "present", "stage"))
    assert stored == [(text, f"ref {text}", i % 2 == 0, "categories") for i, text in enumerate(texts)]


def test_array_text_writes_postgresql_array_input_or_declines():
    from annotator.prepared import array_text
    from datasets.models import Stage

    when = datetime(2026, 12, 4, 18, 30, 1, 250, tzinfo=timezone.utc)
    assert array_text([1, None, -3]) == "{1,NULL,-3}"
    assert array_text([True, False, None]) == "{t,f,NULL}"
    assert array_text(['a"b', "c\\d", "NULL", ""]) == '{"a\\"b","c\\\\d","NULL",""}'
    assert array_text([Stage.CATEGORIES]) == '{"categories"}'
    assert array_text([when, when.date()]) == '{"2026-12-04T18:30:01.000250+00:00","2026-12-04"}'
    assert array_text([]) == "{}"
    # Anything else is left to psycopg's own list dumping.
    assert array_text([1.5]) is None
    assert array_text([{"a": 1}]) is None


def test_save_fields_writes_what_save_writes_and_refuses_a_missing_row():
    from django.db import DatabaseError

    from annotator.prepared import save_fields

    category = CategoryFactory(name="before", supercategory="s")
    category.name, category.supercategory = "after", "changed"
    with CaptureQueriesContext(connection) as ctx:
        save_fields(category, ("name",))
    assert len(ctx) == 1 and ctx[0]["sql"].startswith("UPDATE")
    category.refresh_from_db()
    assert (category.name, category.supercategory) == ("after", "s")  # only the field named
    gone = Category(pk=category.pk + 1000, project_id=category.project_id, coco_id=99, name="x")
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        save_fields(gone, ("name",))
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        gone.save(update_fields=["name"])  # as Django's own


def test_save_new_writes_what_create_writes():
    from annotator.prepared import save_new
    from frontend.models import TaskAnswer, TaskItem

    project = ProjectFactory()
    task = TaskItem.objects.create(kind="categories", project=project, image_ids=[1])
    values = dict(task=task, kind="categories", schema_version=1, worker_id="W", hit_id="H", attempt=1,
                  answer={"images": [{"image": 1, "present": []}]}, summary="1 image")
    before = datetime.now(timezone.utc)
    ours = save_new(TaskAnswer(assignment_id="A1", **values))
    django_s = TaskAnswer.objects.create(assignment_id="A2", **values)
    assert ours.pk is not None and ours.pk != django_s.pk and not ours._state.adding
    a, b = TaskAnswer.objects.get(pk=ours.pk), TaskAnswer.objects.get(pk=django_s.pk)
    skip = {"id", "assignment_id", "created_at"}
    assert ({f.attname: getattr(a, f.attname) for f in TaskAnswer._meta.concrete_fields if f.attname not in skip}
            == {f.attname: getattr(b, f.attname) for f in TaskAnswer._meta.concrete_fields if f.attname not in skip})
    assert a.created_at >= before
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():  # the unique constraint, as create meets it
        save_new(TaskAnswer(assignment_id="A1", **values))


@pytest.mark.django_db(transaction=True)
def test_save_new_with_stores_the_row_and_its_rows_together_or_neither():
    from django.db import IntegrityError

    from annotator.prepared import PreparedInsert, save_new_with
    from datasets.models import ImageLabel, Stage
    from frontend.models import TaskAnswer, TaskItem
    from tests.factories import ImageFactory

    project = ProjectFactory()
    image = ImageFactory(project=project)
    categories = [CategoryFactory(project=project, coco_id=i + 1) for i in range(2)]
    task = TaskItem.objects.create(kind="categories", project=project, image_ids=[image.pk])
    values = dict(task=task, kind="categories", schema_version=1, worker_id="W", hit_id="H", attempt=1,
                  answer={"images": [{"image": image.pk, "present": []}]}, summary="1 image")
    labels = PreparedInsert(ImageLabel, ["image", "category", "present", "stage", "made_by", "assignment_ref",
                                         "schema_version"])

    def rows(ref):
        return [(image.pk, c.pk, c is categories[0], Stage.CATEGORIES, "W", ref, 1) for c in categories]

    with CaptureQueriesContext(connection) as ctx:
        stored = save_new_with(TaskAnswer(assignment_id="A1", **values), labels, rows("A1"))
    assert stored.pk is not None and not stored._state.adding
    assert TaskAnswer.objects.get(pk=stored.pk).assignment_id == "A1"
    assert sorted(ImageLabel.objects.filter(assignment_ref="A1").values_list("category_id", "present")) == [
        (categories[0].pk, True), (categories[1].pk, False)]
    if connection.vendor == "postgresql":  # one statement, no BEGIN/COMMIT of its own
        assert len(ctx) == 1 and ctx[0]["sql"].startswith("WITH ")
    # A repeat meets the answer's unique constraint: neither the answer nor its labels are stored.
    with pytest.raises(IntegrityError):
        save_new_with(TaskAnswer(assignment_id="A1", **values), labels, rows("A1-again"))
    assert TaskAnswer.objects.filter(assignment_id="A1").count() == 1
    assert not ImageLabel.objects.filter(assignment_ref="A1-again").exists()
    # No rows: the answer alone.
    alone = save_new_with(TaskAnswer(assignment_id="A2", **values), labels, [])
    assert TaskAnswer.objects.filter(pk=alone.pk).exists()
