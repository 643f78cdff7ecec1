"""The pipeline on real HITs (the fake MTurk server behind the one boto3 adapter) and the tools'
own answer service: stages chain themselves, each item moves on exactly once, a rejected outline
is redrawn at most K times and then waits in the review queue, adaptive redundancy stops early.
"""
from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from crowd.models import HIT, CrowdStage, PipelineItem
from crowd.pipeline import engine
from crowd.pipeline.chain import chain_of, pipeline_configure
from datasets.models import Category, Image, ImageLabel, InstancePoint, Polygon, Stage
from frontend.models import TaskAnswer, TaskItem
from frontend.services import answer_submit
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project  # noqa: F401

pytestmark = pytest.mark.django_db

BOX = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]


def small_chain(project, **kw):
    overrides = {
        "categories": {"max_assignments": 3, "items_per_hit": 2},
        "spotting": {"max_assignments": 2},
        "segmentation": {"require_training": False},
        "verification": {"max_assignments": 3, "items_per_hit": 1, "max_retries": 1},
    }
    for kind, values in kw.pop("overrides", {}).items():
        overrides.setdefault(kind, {}).update(values)
    return pipeline_configure(project=project, overrides=overrides, **kw)


def answer(fake, hit: HIT, worker: str, body: dict) -> str:
    aid = fake.service.accept(hit.provider_hit_id, worker)
    task = TaskItem.objects.get(pk=hit.task_ref)
    answer_submit(task=task, worker_id=worker, assignment_id=aid, hit_id=hit.provider_hit_id,
                  answer={"schema": f"annotator.answer/{task.kind}", "version": 1, **body})
    engine.items_advance(hit_id=hit.pk)
    return aid


def hits_of(stage: CrowdStage) -> list[HIT]:
    return list(HIT.objects.filter(stage=stage).exclude(status=HIT.Status.CANCELLED).order_by("id"))


@pytest.fixture
def scene(fake_mturk, make_project, make_images):
    project = make_project(budget="500.00")
    images = make_images(project, 3)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    fork = Category.objects.create(project=project, coco_id=48, name="fork")
    return fake_mturk, project, images, cup, fork


def test_stages_chain_from_categories_to_review_queue(scene):
    fake, project, images, cup, fork = scene
    cats, spot, seg, ver = small_chain(project)
    assert [s.pk for s in chain_of(project.pk)] == [cats.pk, spot.pk, seg.pk, ver.pk]

    launched = engine.pipeline_launch(project_id=project.pk)
    assert launched["added"] == 3 and launched["published"] == 2  # 3 images, 2 per HIT
    assert PipelineItem.objects.filter(stage=cats, state="active").count() == 3

    truth = {images[0].pk: [cup.pk], images[1].pk: [cup.pk, fork.pk], images[2].pk: []}
    for hit in hits_of(cats):
        for n, worker in enumerate(["w1", "w2", "w3"]):
            marks = {i: list(truth[i]) for i in hit.items}
            if worker == "w3":  # a worker who misses forks: "any worker" still finds them
                marks = {i: [c for c in v if c != fork.pk] for i, v in marks.items()}
            answer(fake, hit, worker, {"images": [{"image": i, "present": marks[i]} for i in hit.items]})
            if n < 2:  # not finished before its 3 answers
                assert not PipelineItem.objects.filter(stage=cats, hit=hit, state="done").exists()
    assert PipelineItem.objects.filter(stage=cats, state="done").count() == 3
    agg = ImageLabel.objects.filter(stage=Stage.AGGREGATE, present=True)
    assert sorted(agg.values_list("image_id", "category_id")) == sorted(
        (i, c) for i, cs in truth.items() for c in cs)
    # Spotting: one item per (image, category) found, put up at once.
    assert sorted(PipelineItem.objects.filter(stage=spot).values_list("image_id", "category_id")) == sorted(
        (i, c) for i, cs in truth.items() for c in cs)
    assert len(hits_of(spot)) == 3

    for hit in hits_of(spot):
        answer(fake, hit, "w1", {"image": hit.items[0][0], "category": hit.items[0][1],
                                 "points": [{"x": 20, "y": 20}], "crowd": False})
        answer(fake, hit, "w2", {"image": hit.items[0][0], "category": hit.items[0][1],
                                 "points": [{"x": 21, "y": 19}], "crowd": False})
    points = InstancePoint.objects.filter(stage=Stage.AGGREGATE)
    assert points.count() == 3  # one instance per image and category, at the clicks' centre
    assert all(19 <= p.x <= 21 and 19 <= p.y <= 21 for p in points)
    assert PipelineItem.objects.filter(stage=seg, state="active").count() == 3

    first = hits_of(seg)[0]
    answer(fake, first, "w4", {"point": first.items[0][0], "parts": [BOX]})
    polygon = Polygon.objects.get(assignment_ref__isnull=False, point_id=first.items[0][0])
    item = PipelineItem.objects.get(stage=ver, polygon=polygon)
    assert item.state == "active" and item.attempt == 1

    # Rejected by verification: redrawn (attempt 2), rejected again: K=1 is spent, so review.
    for attempt in (1, 2):
        vhit = PipelineItem.objects.get(stage=ver, polygon__point_id=first.items[0][0], attempt=attempt).hit
        for worker in ("v1", "v2", "v3"):
            answer(fake, vhit, worker, {"decisions": [{"polygon": vhit.items[0], "accept": False}]})
        if attempt == 1:
            redo = PipelineItem.objects.get(stage=seg, point_id=first.items[0][0], attempt=2)
            assert redo.state == "active" and redo.hit_id
            answer(fake, redo.hit, "w5", {"point": first.items[0][0], "parts": [BOX]})
    states = dict(PipelineItem.objects.filter(stage=ver).values_list("attempt", "state"))
    assert states == {1: "rejected", 2: "review"}
    assert set(Polygon.objects.filter(point_id=first.items[0][0]).values_list("status", flat=True)) == {"rejected"}
    assert not PipelineItem.objects.filter(stage=seg, attempt=3).exists()

    queued = PipelineItem.objects.get(state="review")
    engine.review_resolve(item_id=queued.pk, accept=True, note="good enough")
    assert Polygon.objects.get(pk=queued.polygon_id).status == "accepted"

    # The replay from stored answers agrees with every decision taken as answers arrived.
    report = engine.pipeline_recompute(project_id=project.pk)
    assert report.items == PipelineItem.objects.exclude(state__in=["active", "waiting"]).count()
    assert report.changed == [] and report.same == report.items

    progress = {row["stage"].kind: row for row in engine.pipeline_progress(project_id=project.pk)}
    assert progress["categories"]["done"] == 3 and progress["verification"]["rejected_back"] == 1
    assert progress["verification"]["review"] == 0 and progress["segmentation"]["in_progress"] == 2


def test_an_item_moves_on_once_when_answers_are_decided_twice(scene):
    fake, project, images, cup, fork = scene
    cats, spot, *_ = small_chain(project, overrides={"categories": {"max_assignments": 1}})
    engine.pipeline_launch(project_id=project.pk)
    hit = hits_of(cats)[0]
    answer(fake, hit, "w1", {"images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
    labels = ImageLabel.objects.filter(stage=Stage.AGGREGATE).count()
    spots = PipelineItem.objects.filter(stage=spot).count()
    # A second decision run (a retried task, a beat catch-up) finds nothing left to move.
    for _ in range(2):
        engine.items_advance(hit_id=hit.pk)
        engine.pipeline_catch_up(project_id=project.pk)
    assert ImageLabel.objects.filter(stage=Stage.AGGREGATE).count() == labels
    assert PipelineItem.objects.filter(stage=spot).count() == spots == 2


def test_classification_only_stops_after_the_first_stage(scene):
    fake, project, images, cup, fork = scene
    (cats,) = pipeline_configure(project=project, preset="classification",
                                 overrides={"categories": {"max_assignments": 2, "aggregation": "majority"}})
    engine.pipeline_launch(project_id=project.pk)
    for hit in hits_of(cats):
        answer(fake, hit, "w1", {"images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
        answer(fake, hit, "w2", {"images": [{"image": i, "present": [cup.pk, fork.pk]} for i in hit.items]})
    done = PipelineItem.objects.filter(stage=cats, state="done")
    assert done.count() == 3
    # Majority: cup (2 of 2) present; fork (1 of 2) is a tie, which at the cap counts as present.
    assert all(d.result["present"] == sorted([cup.pk, fork.pk]) for d in done)
    assert PipelineItem.objects.exclude(stage=cats).count() == 0


def test_known_categories_start_at_spotting(scene, django_user_model):
    fake, project, images, cup, fork = scene
    ImageLabel.objects.create(image=images[0], category=cup, present=True, stage=Stage.IMPORT, made_by="owner")
    spot, seg, ver = pipeline_configure(project=project, preset="known-categories",
                                        overrides={"spotting": {"max_assignments": 1},
                                                   "segmentation": {"require_training": False}})
    out = engine.pipeline_launch(project_id=project.pk)
    assert out["added"] == 1
    assert list(PipelineItem.objects.filter(stage=spot).values_list("image_id", "category_id")) == [
        (images[0].pk, cup.pk)]


def test_adaptive_redundancy_stops_early_and_expires_the_hit(scene):
    fake, project, images, cup, fork = scene
    cats, *_ = small_chain(project, adaptive=True, overrides={
        "categories": {"max_assignments": 8, "min_answers": 2, "confidence": 0.95}})
    engine.pipeline_launch(project_id=project.pk)
    hit = hits_of(cats)[0]
    for worker in ("w1", "w2"):
        answer(fake, hit, worker, {"images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
    items = PipelineItem.objects.filter(hit=hit)
    # Two agreeing workers with a prior skill are sure enough about both categories.
    assert set(items.values_list("state", flat=True)) == {"done"}
    assert all(it.answers == 2 for it in items)
    hit.refresh_from_db()
    assert hit.expires_at is not None  # nobody else takes the 6 answers we no longer need
    remote = fake.service.state.hits[hit.provider_hit_id]
    assert remote.expiration <= fake.service.now()


def test_forged_and_rejected_answers_do_not_count(scene):
    fake, project, images, cup, fork = scene
    cats, *_ = small_chain(project, overrides={"categories": {"max_assignments": 2}})
    engine.pipeline_launch(project_id=project.pk)
    hit = hits_of(cats)[0]
    task = TaskItem.objects.get(pk=hit.task_ref)
    # A browser that claims an assignment the provider never made.
    answer_submit(task=task, worker_id="forger", assignment_id="FORGED000", hit_id=hit.provider_hit_id,
                  answer={"schema": "annotator.answer/categories", "version": 1,
                          "images": [{"image": i, "present": [fork.pk]} for i in hit.items]})
    from crowd.models import Assignment

    Assignment.objects.create(provider_assignment_id="FORGED000", state=Assignment.State.INVALID)
    engine.items_advance(hit_id=hit.pk)
    assert not PipelineItem.objects.filter(hit=hit, state="done").exists()
    for worker in ("w1", "w2"):
        answer(fake, hit, worker, {"images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
    done = PipelineItem.objects.filter(hit=hit, state="done")
    assert done.count() == 2 and all(d.result["present"] == [cup.pk] for d in done)
    assert TaskAnswer.objects.filter(worker_id="forger").count() == 1  # stored, never counted


@pytest.mark.postgres_matrix
@pytest.mark.django_db(transaction=True)
def test_answers_arriving_together_move_an_item_on_once(scene):
    fake, project, images, cup, fork = scene
    cats, spot, *_ = small_chain(project, overrides={"categories": {"max_assignments": 2}})
    engine.pipeline_launch(project_id=project.pk)
    hit = hits_of(cats)[0]
    for worker in ("w1", "w2"):
        aid = fake.service.accept(hit.provider_hit_id, worker)
        answer_submit(task=TaskItem.objects.get(pk=hit.task_ref), worker_id=worker, assignment_id=aid,
                      hit_id=hit.provider_hit_id, answer={"schema": "annotator.answer/categories", "version": 1,
                                                          "images": [{"image": i, "present": [cup.pk]}
                                                                     for i in hit.items]})
    barrier = threading.Barrier(4)
    errors = []

    def run():
        try:
            barrier.wait()
            engine.items_advance(hit_id=hit.pk, publish=False)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if connection.vendor == "sqlite":
        errors = [e for e in errors if "locked" in str(e)]  # SQLite serialises writers; retried by Celery
        engine.items_advance(hit_id=hit.pk, publish=False)
    assert not errors
    assert PipelineItem.objects.filter(hit=hit, state="done").count() == 2
    assert ImageLabel.objects.filter(stage=Stage.AGGREGATE, image_id__in=hit.items).count() == 2 * 2
    assert PipelineItem.objects.filter(stage=spot).count() == 2


def test_a_blocked_workers_answers_stop_counting(scene):
    fake, project, images, cup, fork = scene
    cats, *_ = small_chain(project, overrides={"categories": {"max_assignments": 3, "aggregation": "majority"}})
    engine.pipeline_launch(project_id=project.pk)
    hit = hits_of(cats)[0]
    from crowd.models import Worker

    Worker.objects.create(provider_worker_id="wbad", blocked=True, block_reason="gold")
    answer(fake, hit, "wbad", {"images": [{"image": i, "present": [fork.pk]} for i in hit.items]})
    answer(fake, hit, "w1", {"images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
    answer(fake, hit, "w2", {"images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
    assert not PipelineItem.objects.filter(hit=hit, state="done").exists()  # 2 counted answers of 3
    # When the HIT is over, the item is decided on the answers that count (majority of 2: cup).
    HIT.objects.filter(pk=hit.pk).update(status=HIT.Status.DISPOSED)
    engine.items_advance(hit_id=hit.pk, force_finished_hits=True)
    done = PipelineItem.objects.filter(hit=hit, state="done")
    assert done.count() == 2 and all(d.result["present"] == [cup.pk] for d in done)
