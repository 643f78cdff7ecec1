"""The sync run by real Celery worker processes on real Redis, reaching the fake MTurk over HTTP.

The second test SIGKILLs the worker in the middle of a sync (while the provider holds the answer
to an ApproveAssignment it has already carried out), starts another worker, lets the sync run
again as beat would, and checks that everything converges with nothing approved or paid twice.
"""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from crowd import services
from crowd.models import HIT, Assignment, Payment
from datasets.models import Category
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project, make_stage, worker_env  # noqa: F401
from tests.crowd.test_sync import answer, do_work

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]


def wait_for(predicate, *, timeout: float, what: str, worker=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n" + (worker.output()[-4000:] if worker else ""))


def setup_work(fake, make_project, make_images, make_stage, n_images=6):
    project = make_project()
    images = make_images(project, n_images)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    stage = make_stage(project, bonus=Decimal("0.05"))
    services.stage_launch(stage_id=stage.pk)
    svc = fake.service
    hits = list(HIT.objects.order_by("id"))
    for hit in hits:
        imgs = [i for i in images if i.pk in hit.items]
        for w in ("AWORKER000001", "AWORKER000002", "AWORKER000003"):
            do_work(svc, hit, w, answer(imgs, {imgs[0].pk: [cup.pk]}))
    return stage, hits


def all_disposed(stage):
    return lambda: not HIT.objects.filter(stage=stage).exclude(status=HIT.Status.DISPOSED).exists()


def test_a_worker_process_syncs_with_celery_retries_on_throttling(
        fake_mturk, celery_worker_factory, make_project, make_images, make_stage):
    from crowd import tasks

    stage, hits = setup_work(fake_mturk, make_project, make_images, make_stage)
    svc = fake_mturk.service
    # botocore gives up at once in the worker, so the throttles reach Celery's autoretry.
    worker = celery_worker_factory(env={**worker_env(fake_mturk), "MTURK_MAX_ATTEMPTS": "0"})
    svc.inject("ApproveAssignment", "throttle", 2)
    svc.inject("ListReviewableHITs", "5xx", 1)

    tasks.sync_all.delay()
    wait_for(all_disposed(stage), timeout=90, what="every HIT reviewed and deleted", worker=worker)

    assert "Retry in" in worker.output()
    assert len(svc.approvals) == 9 and all(n == 1 for n in svc.approvals.values())
    assert len(svc.state.bonuses) == 9 and len({b["AssignmentId"] for b in svc.state.bonuses}) == 9
    assert Payment.objects.filter(kind="bonus", status="paid").count() == 9


def test_a_worker_killed_mid_sync_is_replaced_and_nothing_is_paid_twice(
        fake_mturk, celery_worker_factory, make_project, make_images, make_stage):
    from crowd import tasks

    stage, hits = setup_work(fake_mturk, make_project, make_images, make_stage)
    svc = fake_mturk.service
    reached, release = svc.hold("ApproveAssignment", after=4)  # the 5th approval is done, its answer held
    worker = celery_worker_factory(env=worker_env(fake_mturk))
    tasks.stage_sync.delay(stage.pk)
    assert reached.wait(60), worker.output()[-4000:]
    worker.kill()
    release.set()
    assert len(svc.approvals) == 5
    assert Assignment.objects.filter(state=Assignment.State.APPROVED).count() < 5  # the 5th was never recorded

    worker2 = celery_worker_factory(env=worker_env(fake_mturk))
    tasks.stage_sync.delay(stage.pk)  # what beat sends again a minute later
    wait_for(all_disposed(stage), timeout=90, what="the sync to converge", worker=worker2)

    assert len(svc.approvals) == 9 and all(n == 1 for n in svc.approvals.values())
    assert len(svc.state.bonuses) == 9 and len({b["AssignmentId"] for b in svc.state.bonuses}) == 9
    assert Assignment.objects.filter(state=Assignment.State.APPROVED).count() == 9
    assert Payment.objects.filter(kind="bonus", status="paid").count() == 9
    assert Payment.objects.filter(kind="reward").count() == 9
