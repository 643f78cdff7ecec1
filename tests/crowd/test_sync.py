"""Sync against the fake MTurk: review, pay and clean up exactly once, whatever fails in between."""
from __future__ import annotations

import json
from decimal import Decimal
from unittest import mock

import pytest

from crowd import selectors, services
from crowd.models import HIT, Assignment, Payment, Worker
from crowd.providers.base import TransientProviderError
from datasets.models import Category
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project, make_stage  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


def answer(images, present):
    return {"schema": "annotator.answer/categories", "version": 1,
            "images": [{"image": i.pk if hasattr(i, "pk") else i, "present": present.get(getattr(i, "pk", i), [])}
                       for i in images]}


def store(hit: HIT, worker_id: str, assignment_id: str, body: dict) -> None:
    """What the task page does first: post the answer to our server (frontend.services)."""
    from frontend.models import TaskItem
    from frontend.services import answer_submit

    answer_submit(task=TaskItem.objects.get(pk=hit.task_ref), worker_id=worker_id, assignment_id=assignment_id,
                  hit_id=hit.provider_hit_id, answer=body)


def do_work(svc, hit: HIT, worker_id: str, body: dict | None) -> str:
    """A worker accepts, our server stores the answer, the form goes to externalSubmit."""
    aid = svc.accept(hit.provider_hit_id, worker_id)
    if body is not None:
        store(hit, worker_id, aid, body)
    svc.submit(aid, {"answer": json.dumps(body or {})})
    return aid


@pytest.fixture
def launched(fake_mturk, make_project, make_images, make_stage):
    project = make_project()
    images = make_images(project, 4)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    fork = Category.objects.create(project=project, coco_id=48, name="fork")
    stage = make_stage(project, gold={str(images[0].pk): [cup.pk]}, min_gold_accuracy=1.0,
                       bonus=Decimal("0.05"), bonus_min_gold_accuracy=1.0)
    services.stage_launch(stage_id=stage.pk)
    hits = list(HIT.objects.order_by("id"))
    return {"svc": fake_mturk.service, "stage": stage, "images": images, "cup": cup, "fork": fork, "hits": hits,
            "project": project}


def work_everything(ctx) -> dict[str, str]:
    svc, images, cup, fork = ctx["svc"], ctx["images"], ctx["cup"], ctx["fork"]
    h1, h2 = ctx["hits"]
    ids = {
        "good": do_work(svc, h1, "AGOOD00000001", answer(images[:2], {images[0].pk: [cup.pk]})),
        "wrong": do_work(svc, h1, "AWRONG0000001", answer(images[:2], {images[0].pk: [fork.pk]})),
        "silent": do_work(svc, h1, "ASILENT000001", None),  # submitted the form, never posted to us
    }
    for n, w in enumerate(["AGOOD00000001", "AWRONG0000001", "AOTHER0000001"]):
        ids[f"h2-{n}"] = do_work(svc, h2, w, answer(images[2:], {images[2].pk: [fork.pk]}))
    return ids


def test_sync_reviews_pays_and_deletes_exactly_once_under_throttling_and_faults(launched):
    svc = launched["svc"]
    ids = work_everything(launched)
    svc.inject("ListReviewableHITs", "5xx", 1)
    svc.inject("ListAssignmentsForHIT", "throttle", 2)
    svc.inject("ApproveAssignment", "throttle", 2)
    svc.inject("RejectAssignment", "5xx", 1)
    svc.inject("SendBonus", "5xx", 2)
    balance_before = svc.state.balance

    report = services.stage_sync(stage_id=launched["stage"].pk)

    assert (report.hits, report.assignments, report.approved, report.rejected, report.bonuses, report.disposed) == \
        (2, 6, 4, 2, 1, 2)
    assert set(svc.approvals) == {ids["good"], ids["h2-0"], ids["h2-1"], ids["h2-2"]}
    assert all(n == 1 for n in svc.approvals.values())
    assert set(svc.rejections) == {ids["wrong"], ids["silent"]} and all(n == 1 for n in svc.rejections.values())
    assert [(b["AssignmentId"], b["BonusAmount"]) for b in svc.state.bonuses] == [(ids["good"], "0.05")]
    # 4 x ($0.10 + $0.02) + ($0.05 + $0.01)
    assert balance_before - svc.state.balance == Decimal("0.54")
    assert all(h.disposed for h in svc.state.hits.values())

    a = {x.provider_assignment_id: x for x in Assignment.objects.all()}
    assert a[ids["good"]].state == Assignment.State.APPROVED and a[ids["good"]].answer_source == "server"
    assert a[ids["wrong"]].state == Assignment.State.REJECTED and "1 of 1 items" in a[ids["wrong"]].feedback
    assert a[ids["silent"]].state == Assignment.State.REJECTED and "no answer" in a[ids["silent"]].feedback
    assert svc.state.assignments[ids["wrong"]].feedback == a[ids["wrong"]].feedback
    good = Worker.objects.get(provider_worker_id="AGOOD00000001")
    assert (good.approved, good.rejected, good.gold_seen, good.gold_correct) == (2, 0, 1, 1)
    assert Worker.objects.get(provider_worker_id="AWRONG0000001").rejected == 1
    assert Payment.objects.filter(kind="reward", status="paid").count() == 4
    assert Payment.objects.get(kind="bonus").status == "paid"
    assert set(HIT.objects.values_list("status", flat=True)) == {HIT.Status.DISPOSED}
    costs = selectors.project_costs(launched["project"].pk)
    assert costs["spent"] == Decimal("0.54")

    # A second sync (beat runs it every minute) finds nothing to do and sends nothing that pays.
    before = dict(svc.calls)
    again = services.stage_sync(stage_id=launched["stage"].pk)
    assert again.hits == 0
    assert {k: v - before.get(k, 0) for k, v in svc.calls.items() if v != before.get(k, 0)} == {"ListReviewableHITs": 1}


def test_sync_costs_one_list_page_plus_one_call_per_assignment(launched):
    svc = launched["svc"]
    work_everything(launched)
    services.stage_sync(stage_id=launched["stage"].pk)
    assert svc.calls["ListReviewableHITs"] == 1
    assert svc.calls["ListAssignmentsForHIT"] == 2
    assert svc.calls["GetAssignment"] == 0 and svc.calls["GetHIT"] == 0  # the lists answered everything
    assert svc.calls["ApproveAssignment"] + svc.calls["RejectAssignment"] == 6
    assert svc.calls["DeleteHIT"] == 2 and svc.calls["SendBonus"] == 1


def test_a_crash_after_the_provider_approved_converges_without_paying_twice(launched):
    svc = launched["svc"]
    ids = work_everything(launched)
    real = services._transition
    crashed = []

    def crash_once(assignment, state, **kw):
        if not crashed:
            crashed.append(assignment.provider_assignment_id)
            raise SystemExit("worker killed")  # as if the process died right after the call
        return real(assignment, state, **kw)

    with mock.patch("crowd.services._transition", crash_once), pytest.raises(SystemExit):
        services.stage_sync(stage_id=launched["stage"].pk)
    first = crashed[0]
    assert svc.approvals[first] + svc.rejections[first] == 1
    assert Assignment.objects.get(provider_assignment_id=first).state == Assignment.State.CONFIRMED

    # Reviewing it again sends the same decision; the provider says "not Submitted any more",
    # and GetAssignment tells us it was done.
    pk = Assignment.objects.get(provider_assignment_id=first).pk
    assert services.assignment_review(assignment_id=pk).state in ("approved", "rejected")
    assert svc.calls["GetAssignment"] == 1

    services.stage_sync(stage_id=launched["stage"].pk)  # the task's retry
    assert all(n == 1 for n in svc.approvals.values()) and len(svc.approvals) == 4
    assert all(n == 1 for n in svc.rejections.values()) and len(svc.rejections) == 2
    assert len(svc.state.bonuses) == 1 and ids["good"] in svc.approvals


def test_a_bonus_whose_answer_was_lost_is_not_paid_again(launched, settings):
    settings.MTURK_MAX_ATTEMPTS = 0
    svc = launched["svc"]
    ids = work_everything(launched)
    svc.inject("SendBonus", "drop", 1)  # paid, but the answer never arrives
    with pytest.raises(TransientProviderError):
        services.stage_sync(stage_id=launched["stage"].pk)
    assert len(svc.state.bonuses) == 1
    payment = Payment.objects.get(kind="bonus")
    assert payment.status == Payment.Status.PENDING

    services.stage_sync(stage_id=launched["stage"].pk)  # Celery's retry
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PAID and payment.attempts == 2
    assert svc.calls["SendBonus"] == 2 and len(svc.state.bonuses) == 1
    assert svc.state.bonuses[0]["AssignmentId"] == ids["good"]


def test_an_answer_for_an_unknown_assignment_is_pending_until_the_provider_confirms_it(launched):
    svc, images, cup = launched["svc"], launched["images"], launched["cup"]
    h1 = launched["hits"][0]
    aid = svc.accept(h1.provider_hit_id, "ANEW000000001")
    store(h1, "ANEW000000001", aid, answer(images[:2], {images[0].pk: [cup.pk]}))

    services.answers_collect()
    a = Assignment.objects.get(provider_assignment_id=aid)
    assert a.state == Assignment.State.PENDING and a.worker is None and a.claimed_worker_id == "ANEW000000001"
    assert svc.calls["GetAssignment"] == 1  # not submitted yet: the provider does not show it
    assert not selectors.counted_assignments(launched["stage"].pk).exists()

    svc.submit(aid, {"answer": "{}"})
    services.answers_collect()
    a.refresh_from_db()
    assert a.state == Assignment.State.CONFIRMED and a.worker.provider_worker_id == "ANEW000000001"
    assert a.hit_id == h1.pk and a.answer_source == "server" and a.answer["images"][0]["present"] == [cup.pk]
    assert list(selectors.counted_assignments(launched["stage"].pk)) == [a]
    # The sync then reviews it like any other.
    services.hit_sync(hit_id=h1.pk)
    a.refresh_from_db()
    assert a.state == Assignment.State.APPROVED and svc.approvals[aid] == 1


def test_forged_assignment_ids_are_never_counted(launched, settings):
    settings.CROWD_CONFIRM_GIVE_UP = 2
    svc, images = launched["svc"], launched["images"]
    h1 = launched["hits"][0]
    store(h1, "AFORGER000001", "FORGEDASSIGNMENT00000000000000", answer(images[:2], {}))
    real = svc.accept(h1.provider_hit_id, "AREAL00000001")
    store(h1, "AIMPOSTOR0001", real, answer(images[:2], {}))  # someone else's assignment id
    svc.submit(real, {"answer": "{}"})

    services.answers_collect()
    services.answers_collect()
    forged = Assignment.objects.get(provider_assignment_id="FORGEDASSIGNMENT00000000000000")
    stolen = Assignment.objects.get(provider_assignment_id=real)
    assert forged.state == Assignment.State.INVALID and forged.worker is None
    assert stolen.state == Assignment.State.INVALID and "AREAL00000001" in stolen.feedback
    assert not selectors.counted_assignments(launched["stage"].pk).exists()
    assert Worker.objects.filter(provider_worker_id__in=["AFORGER000001", "AIMPOSTOR0001"]).count() == 0


def test_the_form_answer_never_replaces_the_one_our_server_stored(launched):
    """The XML comes from the worker's browser; with the tools installed, only our stored answer counts."""
    svc, images, cup, fork = launched["svc"], launched["images"], launched["cup"], launched["fork"]
    h1 = launched["hits"][0]
    aid = svc.accept(h1.provider_hit_id, "ATAMPER000001")
    store(h1, "ATAMPER000001", aid, answer(images[:2], {images[0].pk: [fork.pk]}))  # wrong on the gold image
    svc.submit(aid, {"answer": json.dumps(answer(images[:2], {images[0].pk: [cup.pk]}))})  # "fixed" in the form
    services.hit_sync(hit_id=h1.pk)
    a = Assignment.objects.get(provider_assignment_id=aid)
    assert a.state == Assignment.State.REJECTED and a.answer["images"][0]["present"] == [fork.pk]


def test_expire_extend_block_and_notify(launched):
    svc = launched["svc"]
    h1, h2 = launched["hits"]
    services.hit_extend(hit_id=h1.pk, seconds=7200)
    assert svc.state.hits[h1.provider_hit_id].expiration > svc.now().replace(microsecond=0)
    services.hit_expire(hit_id=h2.pk)
    with pytest.raises(ValueError, match="expired"):
        svc.accept(h2.provider_hit_id, "ALATE00000001")
    # An expired HIT with no work is reviewable and is deleted by the sync.
    report = services.stage_sync(stage_id=launched["stage"].pk)
    assert report.disposed == 1 and svc.state.hits[h2.provider_hit_id].disposed

    aid = do_work(svc, h1, "ASPAM00000001", None)
    worker = Worker.objects.create(provider_worker_id="ASPAM00000001")
    services.worker_block(worker_id=worker.pk, reason="Submitting empty work.")
    assert svc.state.blocks == {"ASPAM00000001": "Submitting empty work."}
    failures = services.workers_notify(worker_ids=[worker.pk, Worker.objects.create(provider_worker_id="ANOBODY").pk],
                                       subject="About your work", text="Please read the instructions.")
    assert list(failures) == ["ANOBODY"] and svc.state.messages[0]["WorkerId"] == "ASPAM00000001"
    assert aid


def test_a_hit_the_provider_refuses_does_not_stop_the_others(launched):
    svc = launched["svc"]
    work_everything(launched)
    svc.state.balance = Decimal("0.40")  # enough for the first HIT (an approval and a bonus), not the second
    report = services.stage_sync(stage_id=launched["stage"].pk)
    h1, h2 = (HIT.objects.get(pk=h.pk) for h in launched["hits"])
    assert report.failed == 1 and "enough funds" in h2.status_reason
    assert h1.status == HIT.Status.DISPOSED and h2.status != HIT.Status.DISPOSED
    svc.state.balance = Decimal("100.00")  # topped up: the next sync finishes the job
    again = services.stage_sync(stage_id=launched["stage"].pk)
    assert again.failed == 0 and HIT.objects.get(pk=h2.pk).status == HIT.Status.DISPOSED
    assert all(n == 1 for n in svc.approvals.values()) and len(svc.approvals) == 4


def test_every_reviewable_hit_is_synced_even_past_the_first_pages(fake_mturk, make_project, make_images, make_stage):
    """Deleting HITs while paging ListReviewableHITs would skip some; the whole list is read first."""
    project = make_project(budget="1000")
    make_images(project, 230)
    stage = make_stage(project, items_per_hit=1, max_assignments=1)
    services.stage_launch(stage_id=stage.pk)
    svc = fake_mturk.service
    for hit in HIT.objects.all():
        svc.work(hit.provider_hit_id, "AWORKER000001", {"answer": "{}"})
    with mock.patch("crowd.services.SYNC_BATCH", 50):  # so that HITs are deleted between pages
        report = services.stage_sync(stage_id=stage.pk)
    assert report.hits == 230 and report.disposed == 230
    assert svc.calls["ListReviewableHITs"] == 3  # 100 per page


def test_work_left_unreviewed_is_auto_approved_by_the_provider_and_recorded(launched):
    svc = launched["svc"]
    ids = work_everything(launched)
    svc.advance(seconds=launched["stage"].auto_approval_delay_s + 1)
    services.stage_sync(stage_id=launched["stage"].pk)
    states = dict(Assignment.objects.values_list("provider_assignment_id", "state"))
    assert set(states.values()) == {Assignment.State.APPROVED}  # the provider approved them first
    assert svc.calls["ApproveAssignment"] == svc.calls["RejectAssignment"] == 0
    assert Assignment.objects.get(provider_assignment_id=ids["wrong"]).decision == "approve"


def test_expiring_a_hit_the_provider_has_deleted_meanwhile_is_not_an_error(launched):
    """A sync may dispose of a HIT between our read of it and the expiry call (the load
    benchmark's final drain met this): the provider's 'not found' ends the expiry quietly."""
    from crowd.providers.base import NotFound
    from crowd.providers.mturk import MTurkProvider

    h1 = launched["hits"][0]
    gone = NotFound("This HIT is currently in the state 'Disposed'.")
    with mock.patch.object(MTurkProvider, "unit_set_expiration", side_effect=gone) as call:
        hit = services.hit_expire(hit_id=h1.pk)
    assert call.called
    assert hit.expires_at is not None and hit.status == HIT.Status.PUBLISHED  # the sync records the disposal
