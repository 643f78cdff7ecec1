"""The pipeline's Celery task SIGKILLed in the middle of moving items on (after the decisions were
committed, while the next stage's CreateHIT was in flight): a new worker and beat's catch-up
converge with every item decided once, its records written once and the next stage's HITs
published once (counted on the provider's side)."""
from __future__ import annotations

import pytest

from crowd.models import HIT, PipelineItem
from crowd.pipeline import engine
from crowd.pipeline.chain import pipeline_configure
from datasets.models import Category, ImageLabel, Stage
from frontend.models import TaskItem
from frontend.services import answer_submit
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project, worker_env  # noqa: F401
from tests.crowd.test_celery_sync import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]


def test_a_worker_killed_while_moving_items_on_converges_once(fake_mturk, celery_worker_factory, make_project,
                                                             make_images, settings):
    from crowd import tasks

    settings.TOOLS_ANSWER_TASKS = []  # the test queues the pipeline's task itself, once
    project = make_project(budget="500.00")
    images = make_images(project, 4)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    cats, spot, *_ = pipeline_configure(project=project, overrides={
        "categories": {"max_assignments": 2, "items_per_hit": 4}, "spotting": {"max_assignments": 2}})
    engine.pipeline_launch(project_id=project.pk)
    hit = HIT.objects.get(stage=cats)
    svc = fake_mturk.service
    for worker in ("w1", "w2"):
        aid = svc.accept(hit.provider_hit_id, worker)
        answer_submit(task=TaskItem.objects.get(pk=hit.task_ref), worker_id=worker, assignment_id=aid,
                      hit_id=hit.provider_hit_id, answer={"schema": "annotator.answer/categories", "version": 1,
                                                          "images": [{"image": i.pk, "present": [cup.pk]}
                                                                     for i in images]})
    created_before = len(svc.state.hits)
    reached, release = svc.hold("CreateHITWithHITType", after=1)  # the 2nd spotting HIT is made, its answer held
    worker = celery_worker_factory(env=worker_env(fake_mturk))
    tasks.pipeline_answer.delay(hit.task_ref)
    assert reached.wait(60), worker.output()[-4000:]
    worker.kill()
    release.set()
    assert PipelineItem.objects.filter(stage=cats, state="done").count() == 4  # committed before the kill
    assert HIT.objects.filter(stage=spot, provider_hit_id__isnull=True).exists()  # one never heard back

    worker2 = celery_worker_factory(env=worker_env(fake_mturk))
    tasks.pipeline_catch_up.delay()  # what beat sends a minute later
    wait_for(lambda: PipelineItem.objects.filter(stage=spot, state="active").count() == 4
             and not HIT.objects.filter(stage=spot, provider_hit_id__isnull=True).exists(),
             timeout=90, what="the spotting stage to be up", worker=worker2)
    assert len(svc.state.hits) - created_before == 4  # one HIT per spotting item at the provider, none twice
    assert HIT.objects.filter(stage=spot).count() == 4
    assert ImageLabel.objects.filter(stage=Stage.AGGREGATE, present=True).count() == 4
    assert PipelineItem.objects.filter(stage=spot).count() == 4
