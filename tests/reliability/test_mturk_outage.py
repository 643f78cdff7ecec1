"""The MTurk endpoint failing, then throttling, for a stretch while a real Celery worker
publishes a stage and then reviews and pays it: botocore's retries and Celery's backoff wait it
out, the work catches up once the endpoint answers again, and the endpoint's own books show
every HIT created once and every assignment approved and every bonus paid exactly once.

The endpoint is ``tests.crowd.fake_mturk`` over HTTP; its failures are injected by call count
(the next N calls of any operation fail), plus dropped connections after the work was done
(the nastiest case: the call succeeded but the client never heard so, and must not repeat it).
"""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from crowd.models import HIT, Assignment, Payment
from datasets.models import Category
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project, make_stage, worker_env  # noqa: F401
from tests.crowd.fake_mturk import _fee
from tests.crowd.test_sync import answer, do_work
from tests.reliability.test_export_faults import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

WORKER_IDS = ("AWORKER000001", "AWORKER000002", "AWORKER000003")


def test_an_mturk_outage_then_throttling_is_waited_out_and_everything_happens_once(
        fake_mturk, celery_worker_factory, make_project, make_images, make_stage):
    from crowd import tasks

    svc = fake_mturk.service
    project = make_project()
    images = make_images(project, 8)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    stage = make_stage(project, bonus=Decimal("0.05"))
    # botocore tries each call up to 4 times; a longer stretch reaches Celery's backoff.
    worker = celery_worker_factory(env={**worker_env(fake_mturk), "MTURK_MAX_ATTEMPTS": "3"})

    # Publishing while the endpoint fails: 4 service faults in a row, then 4 throttles, and two
    # CreateHIT calls that create their HIT but lose the reply.
    svc.inject("*", "5xx", 4)
    svc.inject("*", "throttle", 4)
    svc.inject("CreateHITWithHITType", "drop", 2)
    tasks.stage_launch.delay(stage.pk)
    wait_for(lambda: HIT.objects.filter(stage=stage).count() == 4
             and not HIT.objects.filter(stage=stage).exclude(status=HIT.Status.PUBLISHED).exists(),
             timeout=240, what="the stage to be published after the outage", worker=worker, every=0.3)
    assert "Retry in" in worker.output()  # Celery's backoff, not only botocore's, was needed
    assert not any(inj.times for inj in svc.injections), "the outage was not all used up"
    # Exactly one HIT per planned HIT at the endpoint, though CreateHIT was called more often.
    assert len(svc.state.hits) == 4
    assert {h.provider_hit_id for h in HIT.objects.filter(stage=stage)} == set(svc.state.hits)
    assert svc.calls["CreateHITWithHITType"] > 4

    for hit in HIT.objects.filter(stage=stage):
        imgs = [i for i in images if i.pk in hit.items]
        for w in WORKER_IDS:
            do_work(svc, hit, w, answer(imgs, {imgs[0].pk: [cup.pk]}))

    # Reviewing and paying while the endpoint throttles everything for a stretch, and while two
    # bonuses and one approval are carried out but their replies are lost.
    svc.inject("*", "throttle", 8)
    svc.inject("SendBonus", "drop", 2)
    svc.inject("ApproveAssignment", "drop", 1)
    approvals_before = svc.calls["ApproveAssignment"]
    tasks.sync_all.delay()

    def all_disposed() -> bool:
        return not HIT.objects.filter(stage=stage).exclude(status=HIT.Status.DISPOSED).exists()

    last_beat = [time.monotonic()]

    def beat_again() -> bool:  # what beat does every CROWD_SYNC_SECONDS, here every 15 s
        if all_disposed():
            return True
        if time.monotonic() - last_beat[0] > 15:
            last_beat[0] = time.monotonic()
            tasks.sync_all.delay()
        return False

    wait_for(beat_again, timeout=300, what="every HIT reviewed, paid and deleted", worker=worker, every=0.5)
    assert not any(inj.times for inj in svc.injections)

    # The endpoint's books: 12 assignments, each approved once and given one bonus, once.
    assert len(svc.approvals) == 12 and set(svc.approvals.values()) == {1}
    assert svc.calls["ApproveAssignment"] - approvals_before >= 12
    bonus_assignments = [b["AssignmentId"] for b in svc.state.bonuses]
    assert len(bonus_assignments) == 12 and len(set(bonus_assignments)) == 12
    assert svc.calls["SendBonus"] > 12  # the dropped ones were sent again, and refused as repeats
    # And ours agree.
    assert Assignment.objects.filter(state=Assignment.State.APPROVED).count() == 12
    assert Payment.objects.filter(kind="bonus", status="paid").count() == 12
    assert Payment.objects.filter(kind="reward").count() == 12
    # Money moved once: 12 rewards and 12 bonuses, each with the endpoint's 20 % fee.
    assert svc.state.balance == Decimal("10000.00") - 12 * (Decimal("0.10") + _fee(Decimal("0.10"), 3)) - 12 * (
        Decimal("0.05") + _fee(Decimal("0.05"), 3))
