"""The full life of a HIT, driven by boto3 (requester) and plain HTTP (workers)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.marketplace.conftest import hit_kwargs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_matrix]
ANSWER_NS = "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd}"


def answers(xml: str) -> dict:
    root = ET.fromstring(xml)
    return {a.find(f"{ANSWER_NS}QuestionIdentifier").text: a.find(f"{ANSWER_NS}FreeText").text
            for a in root.findall(f"{ANSWER_NS}Answer")}


def test_full_life_of_a_hit(market):
    req = market.requester("req", balance="10")
    mturk = req.client()
    alice, bob = market.worker("alice"), market.worker("bob")

    hit = mturk.create_hit(**hit_kwargs(market, MaxAssignments=2, RequesterAnnotation="batch-7"))["HIT"]
    assert hit["HITStatus"] == "Assignable"
    assert hit["Reward"] == "0.05" and hit["MaxAssignments"] == 2
    assert hit["NumberOfAssignmentsAvailable"] == 2
    hit_id = hit["HITId"]
    assert len(hit_id) == 30 and hit_id.isalnum()
    # 2 x (0.05 + 0.01 minimum commission) is held.
    balance = mturk.get_account_balance()
    assert balance["AvailableBalance"] == "9.88" and balance["OnHoldBalance"] == "0.12"

    # The group shows on the worker's list; the preview frames the ExternalURL without an assignment.
    home = alice.get("/market/")
    assert hit["HITTypeId"] in home.text and "Label the animals" in home.text
    preview = alice.get(f"/market/hits/{hit_id}/preview/")
    assert preview.status_code == 200
    assert "assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE" in preview.text and f"hitId={hit_id}" in preview.text

    a1 = alice.accept_assignment_id(hit_id)
    work = alice.get(f"/market/work/{a1}/")
    assert f"assignmentId={a1}" in work.text and f"workerId={alice.worker_id}" in work.text
    assert "turkSubmitTo=http%3A%2F%2F" in work.text
    assert mturk.get_hit(HITId=hit_id)["HIT"]["NumberOfAssignmentsPending"] == 1

    submitted = alice.submit(a1, label="zebrastripes", note="<b>fuzzy</b> & small")
    assert submitted.status_code == 200 and "submitted" in submitted.text
    a2 = bob.accept_assignment_id(hit_id)
    assert bob.submit(a2, label="dog").status_code == 200

    reviewable = mturk.list_reviewable_hits()["HITs"]
    assert [h["HITId"] for h in reviewable] == [hit_id]
    assert reviewable[0]["HITStatus"] == "Reviewable"

    listed = mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"]
    by_worker = {a["WorkerId"]: a for a in listed}
    assert set(by_worker) == {alice.worker_id, bob.worker_id}
    assert answers(by_worker[alice.worker_id]["Answer"]) == {"label": "zebrastripes", "note": "<b>fuzzy</b> & small"}
    assert by_worker[alice.worker_id]["AssignmentStatus"] == "Submitted"

    mturk.approve_assignment(AssignmentId=a1, RequesterFeedback="Thanks!")
    mturk.reject_assignment(AssignmentId=a2, RequesterFeedback="Wrong animal.")
    assert mturk.get_assignment(AssignmentId=a1)["Assignment"]["AssignmentStatus"] == "Approved"
    assert mturk.get_assignment(AssignmentId=a2)["Assignment"]["AssignmentStatus"] == "Rejected"
    # Rejection refunds the held reward and commission; approval pays them.
    balance = mturk.get_account_balance()
    assert balance["AvailableBalance"] == "9.94" and balance["OnHoldBalance"] == "0.00"

    mturk.send_bonus(WorkerId=alice.worker_id, AssignmentId=a1, BonusAmount="1.00", Reason="Great work",
                     UniqueRequestToken="bonus-1")
    # The same token within 24 hours pays nothing twice.
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.send_bonus(WorkerId=alice.worker_id, AssignmentId=a1, BonusAmount="1.00", Reason="Great work",
                         UniqueRequestToken="bonus-1")
    assert "already" in err.value.response["Error"]["Message"]
    bonuses = mturk.list_bonus_payments(HITId=hit_id)["BonusPayments"]
    assert len(bonuses) == 1 and bonuses[0]["BonusAmount"] == "1.00" and bonuses[0]["WorkerId"] == alice.worker_id
    assert mturk.get_account_balance()["AvailableBalance"] == "8.74"  # 1.00 + 0.20 commission

    dash = alice.get("/market/dashboard/").text
    assert "Approved" in dash and "$1.05" in dash and "Great work" in dash
    assert "zebrastripes" not in bob.get("/market/dashboard/").text

    # All work reviewed: the HIT can be disposed of, and then leaves ListHITs.
    mturk.delete_hit(HITId=hit_id)
    assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Disposed"
    assert hit_id not in [h["HITId"] for h in mturk.list_hits()["HITs"]]


def test_expiry_returns_unused_money_and_delete_needs_review(market):
    req = market.requester("req", balance="5")
    mturk = req.client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=3, Reward="0.50"))["HIT"]["HITId"]
    assert mturk.get_account_balance()["OnHoldBalance"] == "1.80"

    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.delete_hit(HITId=hit_id)
    assert "Assignable" in err.value.response["Error"]["Message"]

    a1 = worker.accept_assignment_id(hit_id)
    worker.submit(a1, answer="yes")
    mturk.update_expiration_for_hit(HITId=hit_id, ExpireAt=datetime(2015, 1, 1, tzinfo=timezone.utc))
    hit = mturk.get_hit(HITId=hit_id)["HIT"]
    assert hit["HITStatus"] == "Reviewable" and hit["NumberOfAssignmentsAvailable"] == 0
    # Only the submitted assignment stays on hold.
    balance = mturk.get_account_balance()
    assert (balance["AvailableBalance"], balance["OnHoldBalance"]) == ("4.40", "0.60")
    # Expired: nobody can accept any more.
    other = market.worker()
    assert other.accept(hit_id).status_code == 409

    with pytest.raises(mturk.exceptions.RequestError):
        mturk.delete_hit(HITId=hit_id)  # a submitted assignment is not reviewed yet
    mturk.approve_assignment(AssignmentId=a1)
    mturk.delete_hit(HITId=hit_id)
    assert mturk.get_account_balance()["OnHoldBalance"] == "0.00"
    assert Decimal(mturk.get_account_balance()["AvailableBalance"]) == Decimal("4.40")

    # Extending the expiry of a live HIT puts it back on the list.
    hit2 = mturk.create_hit(**hit_kwargs(market))["HIT"]["HITId"]
    mturk.update_expiration_for_hit(HITId=hit2, ExpireAt=datetime.now(timezone.utc) - timedelta(days=1))
    assert mturk.get_hit(HITId=hit2)["HIT"]["HITStatus"] == "Reviewable"
    mturk.update_expiration_for_hit(HITId=hit2, ExpireAt=datetime.now(timezone.utc) + timedelta(days=1))
    assert mturk.get_hit(HITId=hit2)["HIT"]["HITStatus"] == "Assignable"


def test_return_and_abandoned_work_come_back(market, time_machine):
    req = market.requester("req")
    mturk = req.client()
    w1, w2 = market.worker(), market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, AssignmentDurationInSeconds=60))["HIT"]["HITId"]

    a1 = w1.accept_assignment_id(hit_id)
    assert w2.accept(hit_id).status_code == 409  # the only slot is taken
    assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Unassignable"
    assert w1.post(f"/market/work/{a1}/return/", allow_redirects=False).status_code == 302
    assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Assignable"

    a2 = w2.accept_assignment_id(hit_id)
    time_machine.advance(seconds=61)  # w2 walks away past the assignment's duration
    assert mturk.get_hit(HITId=hit_id)["HIT"]["NumberOfAssignmentsAvailable"] == 1
    late = w2.submit(a2, answer="too late")
    assert late.status_code == 409 and "no longer yours" in late.text
    # The slot is back: w1 may take it again.
    a3 = w1.accept_assignment_id(hit_id)
    assert w1.submit(a3, answer="done").status_code == 200
    assert [a["AssignmentId"] for a in mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"]] == [a3]


def test_auto_approval_after_the_delay(market, time_machine):
    req = market.requester("req")
    mturk = req.client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, AutoApprovalDelayInSeconds=3600))["HIT"]["HITId"]
    aid = worker.accept_assignment_id(hit_id)
    worker.submit(aid, answer="x")
    got = mturk.get_assignment(AssignmentId=aid)["Assignment"]
    assert got["AssignmentStatus"] == "Submitted"
    assert got["AutoApprovalTime"] - got["SubmitTime"] == timedelta(hours=1)

    time_machine.advance(minutes=59)
    assert mturk.get_assignment(AssignmentId=aid)["Assignment"]["AssignmentStatus"] == "Submitted"
    time_machine.advance(minutes=2)
    got = mturk.get_assignment(AssignmentId=aid)["Assignment"]
    assert got["AssignmentStatus"] == "Approved" and got["ApprovalTime"] is not None


def test_periodic_task_auto_approves_without_any_read(market, time_machine):
    from crowd.marketplace.models import Assignment
    from crowd.marketplace.tasks import marketplace_catch_up

    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, AutoApprovalDelayInSeconds=60))["HIT"]["HITId"]
    aid = worker.accept_assignment_id(hit_id)
    worker.submit(aid, answer="x")
    time_machine.advance(seconds=61)
    result = marketplace_catch_up.apply().get()
    assert result["approved"] == 1
    assert Assignment.objects.get(assignment_id=aid).status == "Approved"
    assert marketplace_catch_up.apply().get()["approved"] == 0  # idempotent


def test_equal_hit_type_parameters_give_the_same_hit_type(market):
    mturk = market.requester("req").client()
    params = dict(Title="T", Description="D", Reward="0.10", AssignmentDurationInSeconds=300,
                  AutoApprovalDelayInSeconds=3600, Keywords="k")
    first = mturk.create_hit_type(**params)["HITTypeId"]
    assert mturk.create_hit_type(**params)["HITTypeId"] == first
    assert mturk.create_hit_type(**{**params, "Reward": "0.11"})["HITTypeId"] != first
    hit = mturk.create_hit_with_hit_type(HITTypeId=first, LifetimeInSeconds=600, Question=market.question())["HIT"]
    assert hit["HITTypeId"] == first and hit["Title"] == "T"
    same = mturk.create_hit(**hit_kwargs(market, Title="T", Description="D", Reward="0.10",
                                         AssignmentDurationInSeconds=300, AutoApprovalDelayInSeconds=3600,
                                         Keywords="k"))["HIT"]
    assert same["HITTypeId"] == first


def test_unique_request_token_on_create_hit(market):
    mturk = market.requester("req").client()
    hit_id = mturk.create_hit(**hit_kwargs(market, UniqueRequestToken="tok-1"))["HIT"]["HITId"]
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_hit(**hit_kwargs(market, UniqueRequestToken="tok-1"))
    assert hit_id in err.value.response["Error"]["Message"]
    assert err.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.HitAlreadyExists"
    assert len(mturk.list_hits()["HITs"]) == 1


def test_notifications_reach_only_workers_who_worked_for_the_requester(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market))["HIT"]["HITId"]
    worker.submit(worker.accept_assignment_id(hit_id), answer="x")
    out = mturk.notify_workers(Subject="New batch <soon>", MessageText="Hello <script>alert(1)</script>",
                               WorkerIds=[worker.worker_id, "A0000000000000"])
    assert [f["WorkerId"] for f in out["NotifyWorkersFailureStatuses"]] == ["A0000000000000"]
    assert out["NotifyWorkersFailureStatuses"][0]["NotifyWorkersFailureCode"] == "HardFailure"
    page = worker.get("/market/notifications/").text
    assert "New batch &lt;soon&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.notify_workers(Subject="s" * 201, MessageText="m", WorkerIds=[worker.worker_id])
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.notify_workers(Subject="s", MessageText="m", WorkerIds=[worker.worker_id] * 101)
