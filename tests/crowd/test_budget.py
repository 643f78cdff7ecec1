"""Costs: MTurk's commission, the projection shown before launch, and the admin actions."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.urls import reverse

from crowd import services
from crowd.models import HIT, Assignment, CrowdStage, Payment, Worker
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project, make_stage  # noqa: F401

D = Decimal


@pytest.mark.parametrize("reward,n,fee,total", [
    ("0.10", 3, "0.02", "0.36"),    # 20%
    ("0.10", 10, "0.04", "1.40"),   # 40% from 10 assignments
    ("0.02", 3, "0.01", "0.09"),    # 20% of 2 cents is under a cent: one cent
    ("0.01", 12, "0.01", "0.24"),   # at least one cent per assignment, at 40% too
    ("1.25", 9, "0.25", "13.50"),
])
def test_commission(reward, n, fee, total):
    assert services.fee_for(D(reward), n) == D(fee)
    assert services.hit_cost(reward=D(reward), max_assignments=n) == D(total)


def test_bonus_is_reserved_with_its_fee():
    # 3 x (0.10 + 0.02 + 0.05 + 0.01)
    assert services.hit_cost(reward=D("0.10"), max_assignments=3, bonus=D("0.05")) == D("0.54")


@pytest.mark.django_db
def test_estimate_counts_what_is_not_yet_planned(make_project, make_images, make_stage):
    project = make_project(budget="1.00")
    make_images(project, 5)
    stage = make_stage(project)
    est = services.stage_estimate(stage=stage)
    assert (est.items, est.hits, est.assignments) == (5, 3, 9)
    assert (est.rewards, est.commission, est.total, est.fits) == (D("0.90"), D("0.18"), D("1.08"), 2)


@pytest.fixture
def admin_client_(client, django_user_model):
    admin = django_user_model.objects.create_superuser("boss", "boss@example.org", "pw-for-tests-1234")
    client.force_login(admin)
    return client


@pytest.mark.django_db
def test_launch_from_the_admin_shows_the_cost_then_publishes(fake_mturk, admin_client_, make_project, make_images,
                                                             make_stage):
    project = make_project(budget="1.00")
    make_images(project, 5)
    stage = make_stage(project)
    url = reverse("admin:crowd_crowdstage_changelist")

    page = admin_client_.post(url, {"action": "launch_stage", "_selected_action": [stage.pk]})
    assert page.status_code == 200
    html = page.content.decode()
    assert "$1.08" in html and "$0.90" in html and "$10000.00" in html and "20%" in html
    assert HIT.objects.count() == 0 and fake_mturk.service.calls["CreateHITWithHITType"] == 0

    from unittest import mock

    from crowd import tasks

    queued = []
    with mock.patch.object(tasks.stage_publish, "delay_on_commit", side_effect=queued.append):
        done = admin_client_.post(url, {"action": "launch_stage", "_selected_action": [stage.pk], "apply": "1"},
                                  follow=True)
    assert queued == [stage.pk] and fake_mturk.service.calls["CreateHITWithHITType"] == 0
    tasks.stage_publish.run(stage.pk)  # what the worker then runs
    assert done.status_code == 200
    assert "2 HITs planned; publishing" in done.content.decode() and "Budget reached" in done.content.decode()
    assert set(HIT.objects.values_list("status", flat=True)) == {HIT.Status.PUBLISHED}
    stage.refresh_from_db()
    assert stage.status == CrowdStage.Status.PAUSED and len(fake_mturk.service.state.hits) == 2


@pytest.mark.django_db
def test_assignment_and_worker_actions(fake_mturk, admin_client_, make_project, make_images, make_stage):
    project = make_project()
    make_images(project, 2)
    stage = make_stage(project, kind="categories")
    services.stage_launch(stage_id=stage.pk)
    hit = HIT.objects.get()
    svc = fake_mturk.service
    a1 = svc.work(hit.provider_hit_id, "AONE000000001", {"answer": json.dumps({})})
    a2 = svc.work(hit.provider_hit_id, "ATWO000000001", {"answer": json.dumps({})})
    # Record them without reviewing (as a sync that stopped after listing).
    from crowd.providers import provider_for
    for agent in provider_for().agents_for_unit(hit.provider_hit_id):
        services.assignment_record(hit=hit, agent=agent, stored=None)
    one = Assignment.objects.get(provider_assignment_id=a1)
    two = Assignment.objects.get(provider_assignment_id=a2)
    url = reverse("admin:crowd_assignment_changelist")

    admin_client_.post(url, {"action": "approve", "_selected_action": [one.pk]})
    form = admin_client_.post(url, {"action": "reject", "_selected_action": [two.pk]})
    assert b"feedback" in form.content
    admin_client_.post(url, {"action": "reject", "_selected_action": [two.pk], "apply": "1",
                             "feedback": "The photos were not looked at."})
    admin_client_.post(url, {"action": "bonus", "_selected_action": [one.pk], "apply": "1", "amount": "0.25",
                             "reason": "Great work."})
    admin_client_.post(url, {"action": "bonus", "_selected_action": [one.pk], "apply": "1", "amount": "0.25",
                             "reason": "Great work."})  # a double click pays once
    assert svc.approvals[a1] == 1 and svc.rejections[a2] == 1
    assert svc.state.assignments[a2].feedback == "The photos were not looked at."
    assert len(svc.state.bonuses) == 1 and svc.state.bonuses[0]["BonusAmount"] == "0.25"
    assert Payment.objects.get(kind="bonus").status == "paid"

    worker = Worker.objects.get(provider_worker_id="ATWO000000001")
    wurl = reverse("admin:crowd_worker_changelist")
    admin_client_.post(wurl, {"action": "block", "_selected_action": [worker.pk], "apply": "1", "reason": "Spam."})
    admin_client_.post(wurl, {"action": "notify", "_selected_action": [worker.pk], "apply": "1",
                              "subject": "Hello", "text": "Please read the guide."})
    assert svc.state.blocks == {"ATWO000000001": "Spam."} and svc.state.messages[0]["Subject"] == "Hello"
    for name in ("crowdstage", "hit", "assignment", "worker", "payment", "providercredentials"):
        assert admin_client_.get(reverse(f"admin:crowd_{name}_changelist")).status_code == 200


@pytest.mark.django_db
def test_crowd_sync_command(fake_mturk, make_project, make_images, make_stage):
    import io

    from django.core.management import call_command

    project = make_project()
    make_images(project, 2)
    stage = make_stage(project)
    services.stage_launch(stage_id=stage.pk)
    hit = HIT.objects.get()
    for w in ("AONE000000001", "ATWO000000001", "ATHREE0000001"):
        fake_mturk.service.work(hit.provider_hit_id, w, {"answer": "{}"})
    out = io.StringIO()
    call_command("crowd_sync", "--collect", stdout=out)
    # No answer was stored on our server for any of them: rejected, with feedback, and deleted.
    assert f"stage {stage.pk}: hits 1, assignments 3, approved 0, rejected 3" in out.getvalue()
    assert len(fake_mturk.service.rejections) == 3 and HIT.objects.get().status == HIT.Status.DISPOSED
