"""The marketplace attacked as a requester or a worker would attack it."""
from __future__ import annotations

import requests
import pytest

from tests.marketplace.conftest import hit_kwargs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_matrix]


def test_a_requester_sees_only_their_own_things(market):
    alice_req = market.requester("alice_req").client()
    mallory = market.requester("mallory").client()
    worker = market.worker(invite_of="alice_req")
    hit_id = alice_req.create_hit(**hit_kwargs(market))["HIT"]["HITId"]
    aid = worker.accept_assignment_id(hit_id)
    worker.submit(aid, secret="alice's data")
    qtype = alice_req.create_qualification_type(Name="Skilled", Description="d",
                                                QualificationTypeStatus="Active")["QualificationType"]

    for call, kwargs in [
        (mallory.get_hit, {"HITId": hit_id}),
        (mallory.list_assignments_for_hit, {"HITId": hit_id}),
        (mallory.delete_hit, {"HITId": hit_id}),
        (mallory.update_expiration_for_hit, {"HITId": hit_id, "ExpireAt": 0}),
        (mallory.update_hit_review_status, {"HITId": hit_id}),
        (mallory.list_bonus_payments, {"HITId": hit_id}),
    ]:
        with pytest.raises(mallory.exceptions.RequestError) as err:
            call(**kwargs)
        assert err.value.response["Error"]["Message"].startswith(f"Hit {hit_id} does not exist"), call
    for call, kwargs in [
        (mallory.get_assignment, {"AssignmentId": aid}),
        (mallory.approve_assignment, {"AssignmentId": aid}),
        (mallory.reject_assignment, {"AssignmentId": aid, "RequesterFeedback": "x"}),
        (mallory.send_bonus, {"AssignmentId": aid, "WorkerId": worker.worker_id, "BonusAmount": "1", "Reason": "r"}),
    ]:
        with pytest.raises(mallory.exceptions.RequestError) as err:
            call(**kwargs)
        assert f"Assignment {aid} does not exist" in err.value.response["Error"]["Message"]
    with pytest.raises(mallory.exceptions.RequestError):
        mallory.associate_qualification_with_worker(QualificationTypeId=qtype["QualificationTypeId"],
                                                    WorkerId=worker.worker_id, IntegerValue=1)
    with pytest.raises(mallory.exceptions.RequestError):
        mallory.get_qualification_type(QualificationTypeId=qtype["QualificationTypeId"])
    with pytest.raises(mallory.exceptions.RequestError):
        # A qualification type of another requester cannot gate your HITs either.
        mallory.create_hit(**hit_kwargs(market, QualificationRequirements=[
            {"QualificationTypeId": qtype["QualificationTypeId"], "Comparator": "Exists"}]))
    assert mallory.list_hits()["NumResults"] == 0
    assert mallory.list_reviewable_hits()["NumResults"] == 0
    assert mallory.get_account_balance()["AvailableBalance"] == "1000.00"
    # Mallory cannot message Alice's worker: they never worked for Mallory.
    failed = mallory.notify_workers(Subject="s", MessageText="m", WorkerIds=[worker.worker_id])
    assert len(failed["NotifyWorkersFailureStatuses"]) == 1
    assert alice_req.get_assignment(AssignmentId=aid)["Assignment"]["AssignmentStatus"] == "Submitted"


def test_external_submit_counts_only_for_the_holder_once(market):
    mturk = market.requester("req").client()
    holder, thief = market.worker(), market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=2))["HIT"]["HITId"]
    aid = holder.accept_assignment_id(hit_id)

    # Another signed-in worker posting the holder's assignment id: refused, nothing stored.
    stolen = thief.submit(aid, answer="forged")
    assert stolen.status_code == 409 and "not yours" in stolen.text
    # Anonymous post (no session): only a confirmation page; confirming without a session is refused.
    anon = requests.post(market.base + "/mturk/externalSubmit", data={"assignmentId": aid, "answer": "anon"})
    assert anon.status_code == 200 and "Confirm your submission" in anon.text
    confirmed = requests.post(market.base + "/mturk/externalSubmit",
                              data={"assignmentId": aid, "answer": "anon", "_confirm": "1"})
    assert confirmed.status_code == 403
    # The preview's placeholder id can never submit.
    preview = holder.submit("ASSIGNMENT_ID_NOT_AVAILABLE", answer="x")
    assert preview.status_code == 409 and "preview" in preview.text.lower()
    # A GET does nothing.
    assert holder.get(f"/mturk/externalSubmit?assignmentId={aid}&answer=x").status_code == 405
    assert mturk.list_assignments_for_hit(HITId=hit_id)["NumResults"] == 0

    assert holder.submit(aid, answer="real").status_code == 200
    replay = holder.submit(aid, answer="again")
    assert replay.status_code == 409 and "already submitted" in replay.text
    listed = mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"]
    assert len(listed) == 1 and "real" in listed[0]["Answer"] and "again" not in listed[0]["Answer"]


def test_a_worker_sees_neither_others_work_nor_uninvited_requesters(market):
    mine = market.requester("mine").client()
    private = market.requester("private").client()
    public = market.requester("public", public=True).client()
    w1, w2 = market.worker(invite_of="mine"), market.worker(invite_of="mine")
    my_hit = mine.create_hit(**hit_kwargs(market, Title="Mine to do", MaxAssignments=2))["HIT"]["HITId"]
    private_hit = private.create_hit(**hit_kwargs(market, Title="Secret project"))["HIT"]["HITId"]
    public.create_hit(**hit_kwargs(market, Title="Open to all"))

    page = w1.get("/market/").text
    assert "Mine to do" in page and "Open to all" in page and "Secret project" not in page
    assert w1.get(f"/market/hits/{private_hit}/preview/").status_code == 404
    assert w1.accept(private_hit).status_code == 409

    a1 = w1.accept_assignment_id(my_hit)
    # w2 cannot open, return or submit w1's assignment.
    assert w2.get(f"/market/work/{a1}/").status_code == 404
    assert w2.post(f"/market/work/{a1}/return/", allow_redirects=False).status_code == 409
    w1.submit(a1, answer="w1-private-answer")
    assert "w1-private-answer" not in w2.get("/market/dashboard/").text
    # Anonymous visitors are sent to sign in.
    anon = requests.get(market.base + "/market/", allow_redirects=False)
    assert anon.status_code == 302 and "/market/login/" in anon.headers["Location"]


def test_worker_pages_need_csrf_for_state_changes(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market))["HIT"]["HITId"]
    forged = worker.session.post(market.base + f"/market/hits/{hit_id}/accept/", allow_redirects=False)
    assert forged.status_code == 403
    assert mturk.get_hit(HITId=hit_id)["HIT"]["NumberOfAssignmentsPending"] == 0


def test_signup_needs_an_invitation_unless_open(market, settings):
    closed = requests.get(market.base + "/market/signup/")
    assert closed.status_code == 403
    settings.MARKETPLACE_OPEN_SIGNUP = True
    session = requests.Session()
    assert session.get(market.base + "/market/signup/").status_code == 200
    response = session.post(market.base + "/market/signup/", data={
        "username": "walkin", "country": "DE", "password1": "Sturdy-pass-9271", "password2": "Sturdy-pass-9271",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]}, allow_redirects=False)
    assert response.status_code == 302
    assert "Your worker ID is" in session.get(market.base + "/market/").text
    bad = requests.Session()
    bad.get(market.base + "/market/signup/?code=not-a-code")
    response = bad.post(market.base + "/market/signup/", data={
        "username": "sneaky", "country": "US", "password1": "Sturdy-pass-9271", "password2": "Sturdy-pass-9271",
        "invite_code": "not-a-code", "csrfmiddlewaretoken": bad.cookies["csrftoken"]})
    assert "not valid" in response.text


def test_html_question_is_served_sandboxed(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    html = ('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/'
            'HTMLQuestion.xsd"><HTMLContent><![CDATA[<form><input name="a"></form><script>1</script>]]>'
            '</HTMLContent><FrameHeight>400</FrameHeight></HTMLQuestion>')
    hit_id = mturk.create_hit(**hit_kwargs(market, Question=html))["HIT"]["HITId"]
    preview = worker.get(f"/market/hits/{hit_id}/preview/").text
    assert f"/market/hits/{hit_id}/question/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE" in preview
    content = worker.get(f"/market/hits/{hit_id}/question/")
    assert content.status_code == 200 and '<input name="a">' in content.text
    assert content.headers["Content-Security-Policy"].startswith("sandbox")
    assert "allow-same-origin" not in content.headers["Content-Security-Policy"]


def test_an_existing_worker_joins_another_crowd_with_its_link(market):
    market.requester("first")
    second = market.requester("second").client()
    worker = market.worker(invite_of="first")
    second.create_hit(**hit_kwargs(market, Title="Second crowd only"))
    assert "Second crowd only" not in worker.get("/market/").text
    code = market.invite("second")
    assert "Join a requester" in worker.get(f"/market/join/{code}/").text
    assert worker.post(f"/market/join/{code}/", allow_redirects=False).status_code == 302
    assert "Second crowd only" in worker.get("/market/").text
    # The link was for one use: it is spent now.
    late = market.worker(invite_of="first")
    assert "not valid" in late.post(f"/market/join/{code}/").text


def test_a_signed_in_non_worker_can_become_a_worker(market):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("staffer", password="Staff-pass-7712")
    s = requests.Session()
    s.get(market.base + "/market/login/")
    s.post(market.base + "/market/login/", data={"username": "staffer", "password": "Staff-pass-7712",
                                                 "csrfmiddlewaretoken": s.cookies["csrftoken"]})
    page = s.get(market.base + "/market/")
    assert page.status_code == 403 and "not a worker account" in page.text
    made = s.post(market.base + "/market/become-worker/", headers={"X-CSRFToken": s.cookies["csrftoken"]})
    assert made.status_code == 200 and "Your worker ID is" in made.text
