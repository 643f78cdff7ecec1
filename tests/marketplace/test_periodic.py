"""The periodic catch-up runs in a real Celery worker process and is on the beat schedule."""
from __future__ import annotations

import time

import pytest
from django.conf import settings

from tests.marketplace.conftest import hit_kwargs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]


def test_beat_schedules_the_catch_up():
    entry = settings.CELERY_BEAT_SCHEDULE["marketplace-catch-up"]
    assert entry["task"] == "marketplace.catch_up" and entry["schedule"] <= 60


def test_a_real_worker_process_auto_approves(market, celery_worker):
    from crowd.marketplace.models import Assignment
    from crowd.marketplace.tasks import marketplace_catch_up

    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, AutoApprovalDelayInSeconds=0))["HIT"]["HITId"]
    aid = worker.accept_assignment_id(hit_id)
    worker.submit(aid, answer="x")
    assert Assignment.objects.get(assignment_id=aid).status == "Submitted"  # no API read has caught up
    marketplace_catch_up.apply_async(queue=settings.CELERY_TASK_DEFAULT_QUEUE)
    deadline = time.monotonic() + 60  # waiting for another process, not timing business logic
    while time.monotonic() < deadline:
        if Assignment.objects.get(assignment_id=aid).status == "Approved":
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the worker never approved the assignment:\n{celery_worker.output()[-3000:]}")
