"""Worker quality in the crowd flow: a worker whose gold answers are confidently wrong (10 of 10:
the prior of 4 right, 1 wrong needs that many to be sure) is blocked
at the provider (once), and their answers stop counting in the pipeline; a worker with too little
gold to judge, or a good record, is left alone."""
from __future__ import annotations

import re

import pytest

from crowd import services
from crowd.models import HIT, Worker
from datasets.models import Category
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project, make_stage  # noqa: F401
from tests.crowd.test_sync import answer, do_work

pytestmark = pytest.mark.django_db


def test_a_worker_confidently_wrong_on_gold_is_blocked_once(fake_mturk, make_project, make_images, make_stage,
                                                             settings):
    settings.CROWD_BLOCK_MIN_GOLD = 5
    project = make_project()
    images = make_images(project, 10)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    stage = make_stage(project, items_per_hit=1, max_assignments=2, min_approval_rate=None, min_approved_hits=None,
                       locales=[], gold={str(i.pk): [cup.pk] for i in images})
    services.stage_launch(stage_id=stage.pk)
    svc = fake_mturk.service
    hits = list(HIT.objects.filter(stage=stage).order_by("id"))
    for hit in hits:
        do_work(svc, hit, "ABADWORKER0001", answer([hit.items[0]], {}))  # never sees the cup
        do_work(svc, hit, "AGOODWORKER001", answer([hit.items[0]], {hit.items[0]: [cup.pk]}))
    services.stage_sync(stage_id=stage.pk)
    bad = Worker.objects.get(provider_worker_id="ABADWORKER0001")
    good = Worker.objects.get(provider_worker_id="AGOODWORKER001")
    assert (bad.gold_seen, bad.gold_correct, bad.blocked) == (10, 0, True)
    # Blocked as soon as the record was sure (9 wrong of 9 here), with the evidence as the reason.
    found = re.search(r"(\d+) of \1 items with known answers were answered wrongly", bad.block_reason)
    assert found and 5 <= int(found[1]) <= 10
    assert "ABADWORKER0001" in svc.state.blocks and "AGOODWORKER001" not in svc.state.blocks
    assert (good.gold_correct, good.blocked) == (10, False)
    # Reviewing again blocks nobody twice.
    assert services.workers_quality_review(worker_ids=[bad.pk, good.pk]) == []


def test_too_little_gold_is_not_enough_to_block(fake_mturk, make_project, make_images, make_stage, settings):
    settings.CROWD_BLOCK_MIN_GOLD = 5
    project = make_project()
    worker = Worker.objects.create(provider_worker_id="ANEWWORKER0001", gold_seen=3, gold_correct=0)
    assert services.workers_quality_review(worker_ids=[worker.pk]) == []
    worker.refresh_from_db()
    assert not worker.blocked
