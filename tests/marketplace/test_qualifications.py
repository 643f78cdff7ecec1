"""Qualification-gated HITs, system qualifications, auto-granted types, and worker blocks."""
from __future__ import annotations

import re

import pytest

from tests.marketplace.conftest import hit_kwargs

pytestmark = pytest.mark.django_db(transaction=True)
LOCALE = "00000000000000000071"
APPROVED_COUNT = "00000000000000000040"


def test_requester_granted_qualification_gates_accept(market):
    mturk = market.requester("req").client()
    skilled, novice = market.worker(), market.worker()
    qtype = mturk.create_qualification_type(Name="Bird expert", Description="Knows birds", Keywords="birds",
                                            QualificationTypeStatus="Active")["QualificationType"]
    qtid = qtype["QualificationTypeId"]
    assert mturk.get_qualification_type(QualificationTypeId=qtid)["QualificationType"]["Name"] == "Bird expert"
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_qualification_type(Name="Bird expert", Description="again", QualificationTypeStatus="Active")
    assert "unique" in err.value.response["Error"]["Message"]

    mturk.associate_qualification_with_worker(QualificationTypeId=qtid, WorkerId=skilled.worker_id, IntegerValue=90)
    mturk.associate_qualification_with_worker(QualificationTypeId=qtid, WorkerId=novice.worker_id, IntegerValue=10)
    listed = mturk.list_workers_with_qualification_type(QualificationTypeId=qtid)["Qualifications"]
    assert {q["WorkerId"]: q["IntegerValue"] for q in listed} == {skilled.worker_id: 90, novice.worker_id: 10}

    hit_id = mturk.create_hit(**hit_kwargs(market, QualificationRequirements=[{
        "QualificationTypeId": qtid, "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [50]}]))["HIT"]["HITId"]
    # Default guard is Accept: the novice sees and previews the HIT but cannot accept it.
    assert "Qualification required" in novice.get("/market/").text
    assert novice.get(f"/market/hits/{hit_id}/preview/").status_code == 200
    refused = novice.accept(hit_id)
    assert refused.status_code == 409 and "qualification" in refused.text
    assert skilled.accept(hit_id).status_code == 302

    mturk.disassociate_qualification_from_worker(QualificationTypeId=qtid, WorkerId=skilled.worker_id, Reason="x")
    assert [q["WorkerId"] for q in mturk.list_workers_with_qualification_type(
        QualificationTypeId=qtid)["Qualifications"]] == [novice.worker_id]
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.disassociate_qualification_from_worker(QualificationTypeId=qtid, WorkerId=skilled.worker_id)


def test_actions_guarded_hide_and_block_preview(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    qtid = mturk.create_qualification_type(Name="Q", Description="d",
                                           QualificationTypeStatus="Active")["QualificationType"]["QualificationTypeId"]
    hidden = mturk.create_hit(**hit_kwargs(market, Title="Hidden group", QualificationRequirements=[{
        "QualificationTypeId": qtid, "Comparator": "Exists",
        "ActionsGuarded": "DiscoverPreviewAndAccept"}]))["HIT"]["HITId"]
    no_preview = mturk.create_hit(**hit_kwargs(market, Title="Visible group", QualificationRequirements=[{
        "QualificationTypeId": qtid, "Comparator": "Exists", "ActionsGuarded": "PreviewAndAccept"}]))["HIT"]["HITId"]
    page = worker.get("/market/").text
    assert "Hidden group" not in page and "Visible group" in page
    assert worker.get(f"/market/hits/{no_preview}/preview/").status_code == 403
    assert worker.get(f"/market/hits/{hidden}/preview/").status_code == 403
    mturk.associate_qualification_with_worker(QualificationTypeId=qtid, WorkerId=worker.worker_id, IntegerValue=1)
    assert "Hidden group" in worker.get("/market/").text
    assert worker.accept(hidden).status_code == 302


def test_locale_and_approval_count_system_qualifications(market):
    mturk = market.requester("req").client()
    us, de = market.worker(country="US"), market.worker(country="DE")
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=2, QualificationRequirements=[{
        "QualificationTypeId": LOCALE, "Comparator": "In",
        "LocaleValues": [{"Country": "US"}, {"Country": "CA"}]}]))["HIT"]["HITId"]
    assert de.accept(hit_id).status_code == 409
    aid = us.accept_assignment_id(hit_id)
    us.submit(aid, a="1")
    mturk.approve_assignment(AssignmentId=aid)

    veteran_only = mturk.create_hit(**hit_kwargs(market, QualificationRequirements=[{
        "QualificationTypeId": APPROVED_COUNT, "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [1]}]))
    hit2 = veteran_only["HIT"]["HITId"]
    assert de.accept(hit2).status_code == 409
    assert us.accept(hit2).status_code == 302

    with pytest.raises(mturk.exceptions.RequestError):  # a locale needs LocaleValues
        mturk.create_hit(**hit_kwargs(market, QualificationRequirements=[{
            "QualificationTypeId": LOCALE, "Comparator": "EqualTo", "IntegerValues": [1]}]))
    with pytest.raises(mturk.exceptions.RequestError):  # GreaterThan takes one value
        mturk.create_hit(**hit_kwargs(market, QualificationRequirements=[{
            "QualificationTypeId": APPROVED_COUNT, "Comparator": "GreaterThan", "IntegerValues": [1, 2]}]))


def test_auto_granted_qualification_is_requested_on_the_site(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    qtype = mturk.create_qualification_type(Name="Agreed to terms", Description="Read the guidelines",
                                            QualificationTypeStatus="Active", AutoGranted=True,
                                            AutoGrantedValue=5)["QualificationType"]
    assert qtype["AutoGranted"] is True and qtype["IsRequestable"] is True
    page = worker.get("/market/qualifications/").text
    assert "Agreed to terms" in page and "Request" in page
    response = worker.post("/market/qualifications/", {"qualification_type_id": qtype["QualificationTypeId"]})
    assert response.status_code == 200 and "You now hold the qualification" in response.text
    listed = mturk.list_workers_with_qualification_type(QualificationTypeId=qtype["QualificationTypeId"])
    assert [(q["WorkerId"], q["IntegerValue"]) for q in listed["Qualifications"]] == [(worker.worker_id, 5)]


def test_worker_blocks(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, Title="Blocked from this", MaxAssignments=2))["HIT"]["HITId"]
    mturk.create_worker_block(WorkerId=worker.worker_id, Reason="Spam answers")
    assert mturk.list_worker_blocks()["WorkerBlocks"] == [{"WorkerId": worker.worker_id, "Reason": "Spam answers"}]
    assert "Blocked from this" not in worker.get("/market/").text
    assert worker.accept(hit_id).status_code == 409
    mturk.delete_worker_block(WorkerId=worker.worker_id, Reason="Forgiven")
    assert mturk.list_worker_blocks()["WorkerBlocks"] == []
    assert worker.accept(hit_id).status_code == 302
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_worker_block(WorkerId="A0000000000000", Reason="x")
    assert "does not exist" in err.value.response["Error"]["Message"]


def test_worker_ids_look_like_mturk(market):
    market.requester("req")
    worker = market.worker()
    assert re.fullmatch(r"A[A-Z0-9]{13}", worker.worker_id)


QUESTION_FORM = """<QuestionForm xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2017-11-06/QuestionForm.xsd">
  <Question><QuestionIdentifier>q1</QuestionIdentifier>
    <QuestionContent><Text>Which one is a bird?</Text></QuestionContent>
    <AnswerSpecification><SelectionAnswer><Selections>
      <Selection><SelectionIdentifier>a</SelectionIdentifier><Text>Sparrow</Text></Selection>
      <Selection><SelectionIdentifier>b</SelectionIdentifier><Text>Bat &lt;mammal&gt;</Text></Selection>
    </Selections></SelectionAnswer></AnswerSpecification></Question>
  <Question><QuestionIdentifier>q2</QuestionIdentifier>
    <QuestionContent><Text>Which one swims?</Text></QuestionContent>
    <AnswerSpecification><SelectionAnswer><Selections>
      <Selection><SelectionIdentifier>a</SelectionIdentifier><Text>Trout</Text></Selection>
      <Selection><SelectionIdentifier>b</SelectionIdentifier><Text>Hawk</Text></Selection>
    </Selections></SelectionAnswer></AnswerSpecification></Question>
</QuestionForm>"""
ANSWER_KEY = """<AnswerKey xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/AnswerKey.xsd">
  <Question><QuestionIdentifier>q1</QuestionIdentifier>
    <AnswerOption><SelectionIdentifier>a</SelectionIdentifier><AnswerScore>1</AnswerScore></AnswerOption></Question>
  <Question><QuestionIdentifier>q2</QuestionIdentifier>
    <AnswerOption><SelectionIdentifier>a</SelectionIdentifier><AnswerScore>1</AnswerScore></AnswerOption></Question>
  <QualificationValueMapping><PercentageMapping><MaximumSummedScore>2</MaximumSummedScore></PercentageMapping>
  </QualificationValueMapping>
</AnswerKey>"""


def test_a_qualification_test_scored_by_its_answer_key(market):
    mturk = market.requester("req").client()
    good, poor = market.worker(), market.worker()
    qtype = mturk.create_qualification_type(
        Name="Animal quiz", Description="Two questions", QualificationTypeStatus="Active",
        Test=QUESTION_FORM, AnswerKey=ANSWER_KEY, TestDurationInSeconds=600)["QualificationType"]
    qtid = qtype["QualificationTypeId"]
    assert qtype["IsRequestable"] is True and qtype["Test"] == QUESTION_FORM
    hit_id = mturk.create_hit(**hit_kwargs(market, QualificationRequirements=[{
        "QualificationTypeId": qtid, "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [100]}]))["HIT"]["HITId"]

    page = good.get("/market/qualifications/").text
    assert f"/market/qualifications/{qtid}/test/" in page
    form = good.get(f"/market/qualifications/{qtid}/test/").text
    assert "Which one is a bird?" in form and "Bat &lt;mammal&gt;" in form
    assert "100" in good.post(f"/market/qualifications/{qtid}/test/", {"q1": "a", "q2": "a"}).text
    assert "50" in poor.post(f"/market/qualifications/{qtid}/test/", {"q1": "a", "q2": "b"}).text
    again = poor.post(f"/market/qualifications/{qtid}/test/", {"q1": "a", "q2": "a"})
    assert again.status_code == 409 and "cannot be retaken" in again.text  # no RetryDelayInSeconds

    scores = {q["WorkerId"]: q["IntegerValue"] for q in mturk.list_workers_with_qualification_type(
        QualificationTypeId=qtid)["Qualifications"]}
    assert scores == {good.worker_id: 100, poor.worker_id: 50}
    assert poor.accept(hit_id).status_code == 409
    assert good.accept(hit_id).status_code == 302

    with pytest.raises(mturk.exceptions.RequestError):  # a test must be scorable here
        mturk.create_qualification_type(Name="No key", Description="d", QualificationTypeStatus="Active",
                                        Test=QUESTION_FORM, TestDurationInSeconds=60)
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.create_qualification_type(Name="Broken", Description="d", QualificationTypeStatus="Active",
                                        Test="<QuestionForm>", AnswerKey=ANSWER_KEY, TestDurationInSeconds=60)
