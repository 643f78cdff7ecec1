"""The boto3 adapter and its edges: errors, credentials, answer XML, ExternalQuestion, rules."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings

from crowd import crypto, rules, services
from crowd.answers import AnswerXMLError, answer_xml, check_task_url, external_question_xml, parse_answer_xml
from crowd.models import ProviderCredentials
from crowd.providers import provider_for
from crowd.providers.base import AlreadyExists, InvalidState, NotFound, ProviderError, TransientProviderError
from crowd.providers.mturk import retry_config
from tests.crowd.crowd_fixtures import TEST_KEY_ID, fake_mturk, make_project  # noqa: F401


def test_errors_are_translated(fake_mturk, settings):
    p = provider_for()
    with pytest.raises(NotFound) as exc:
        p.agent_get("NOSUCHASSIGNMENT")
    assert exc.value.code == "AWS.MechanicalTurk.AssignmentDoesNotExist"
    with pytest.raises(NotFound):
        p.unit_get("NOSUCHHIT")
    type_id = p.unit_type_register(services.UnitType("t", "d", "", Decimal("0.05"), 60, 60))
    unit = p.unit_create(type_id=type_id, question="<q/>", max_assignments=1, lifetime_s=60, annotation="a",
                         token="tok-1")
    with pytest.raises(AlreadyExists) as exc:
        p.unit_create(type_id=type_id, question="<q/>", max_assignments=1, lifetime_s=60, annotation="a",
                      token="tok-1")
    assert exc.value.existing_id == unit.id
    aid = fake_mturk.service.work(unit.id, "AW00000000001", {"answer": "{}"})
    p.agent_approve(aid, "")
    with pytest.raises(InvalidState):
        p.agent_approve(aid, "")
    fake_mturk.service.inject("GetAccountBalance", "throttle", 10)
    settings.MTURK_MAX_ATTEMPTS = 2
    from crowd.providers.mturk import reset_clients
    reset_clients()
    with pytest.raises(TransientProviderError) as exc:
        provider_for().balance()
    assert exc.value.code == "ThrottlingException"
    assert fake_mturk.service.calls["GetAccountBalance"] == 3  # the first try and botocore's 2 retries


def test_retry_config_comes_from_settings(settings):
    settings.MTURK_RETRY_MODE, settings.MTURK_MAX_ATTEMPTS = "adaptive", 7
    cfg = retry_config()
    assert cfg.retries == {"mode": "adaptive", "max_attempts": 7}


def test_missing_credentials_say_what_to_do(settings):
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = ""
    with pytest.raises(ProviderError, match="create_requester_key"):
        provider_for()


@pytest.mark.django_db
def test_per_project_credentials_are_encrypted_and_used(fake_mturk, make_project):
    project = make_project()
    creds = services.credentials_set(project=project, access_key_id="AKIDPROJECT00000001",
                                     secret_access_key="project-secret", endpoint_url=fake_mturk.url)
    stored = ProviderCredentials.objects.get(pk=creds.pk).secret_encrypted
    assert "project-secret" not in stored and crypto.decrypt(stored) == "project-secret"
    provider_for(project).balance()
    provider_for().balance()
    assert fake_mturk.service.access_keys == {"AKIDPROJECT00000001": 1, TEST_KEY_ID: 1}
    with override_settings(SECRET_KEY="another-key-entirely-0123456789-abcdefghijklmnop"):
        with pytest.raises(crypto.SecretUnreadable):
            crypto.decrypt(stored)
    with override_settings(CROWD_SECRET_KEYS=["new-key-material", "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"]):
        rotated = crypto.rotate(stored)
        assert crypto.decrypt(rotated) == "project-secret"


def test_answer_xml_round_trip_and_json_field():
    xml = answer_xml({"answer": '{"schema": "annotator.answer/categories", "images": []}', "comment": "a < b & c"})
    parsed = parse_answer_xml(xml)
    assert parsed["answer"] == {"schema": "annotator.answer/categories", "images": []}
    assert parsed["comment"] == "a < b & c"
    assert parse_answer_xml("") == {}


def test_answer_xml_selections_and_files():
    xml = ('<QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/'
           'QuestionFormAnswers.xsd"><Answer><QuestionIdentifier>pick</QuestionIdentifier>'
           '<SelectionIdentifier>a</SelectionIdentifier><SelectionIdentifier>b</SelectionIdentifier></Answer>'
           '<Answer><QuestionIdentifier>file</QuestionIdentifier><UploadedFileKey>k1</UploadedFileKey>'
           '<UploadedFileSizeInBytes>12</UploadedFileSizeInBytes></Answer></QuestionFormAnswers>')
    assert parse_answer_xml(xml) == {"pick": ["a", "b"], "file": {"key": "k1", "size": 12}}


@pytest.mark.parametrize("bad,why", [
    ('<!DOCTYPE x [<!ENTITY a "aaaa">]><QuestionFormAnswers>&a;</QuestionFormAnswers>', "DTD"),
    ('<?xml version="1.0"?><!DOCTYPE QuestionFormAnswers SYSTEM "file:///etc/passwd"><QuestionFormAnswers/>', "DTD"),
    ("<QuestionFormAnswers><Answer>", "well-formed"),
    ("<Other/>", "root"),
    ("<QuestionFormAnswers><Answer><FreeText>x</FreeText></Answer></QuestionFormAnswers>", "QuestionIdentifier"),
])
def test_hostile_or_broken_answer_xml_is_refused(bad, why):
    with pytest.raises(AnswerXMLError, match=why):
        parse_answer_xml(bad)


def test_external_question_and_task_url_rules():
    xml = external_question_xml("https://a.example/tasks/categories/x:y/?a=1&b=2", 800)
    assert "<ExternalURL>https://a.example/tasks/categories/x:y/?a=1&amp;b=2</ExternalURL>" in xml
    assert "<FrameHeight>800</FrameHeight>" in xml and "2006-07-14/ExternalQuestion.xsd" in xml
    assert check_task_url("https://a.example/t/", allow_http_loopback=False)
    assert check_task_url("http://127.0.0.1:8000/t/", allow_http_loopback=True)
    for url, allow in [("http://127.0.0.1:8000/t/", False), ("http://a.example/t/", True), ("ftp://x/", True)]:
        with pytest.raises(ValueError):
            check_task_url(url, allow_http_loopback=allow)


def test_rules():
    gold = {"1": [5], "2": []}
    good = {"images": [{"image": 1, "present": [5]}, {"image": 2, "present": []}, {"image": 3, "present": [7]}]}
    half = {"images": [{"image": 1, "present": [5]}, {"image": 2, "present": [9]}]}
    j = rules.judge(kind="categories", answer=good, gold=gold, min_gold_accuracy=1.0)
    assert j.approve and (j.gold_seen, j.gold_correct) == (2, 2)
    j = rules.judge(kind="categories", answer=half, gold=gold, min_gold_accuracy=0.75)
    assert not j.approve and "1 of 2" in j.feedback
    assert rules.judge(kind="categories", answer=half, gold=gold, min_gold_accuracy=0.5).approve
    assert not rules.judge(kind="categories", answer=None, gold={}, min_gold_accuracy=0).approve
    assert "malformed" in rules.judge(kind="categories", answer="unreadable", gold={}, min_gold_accuracy=0).feedback
    assert "empty" in rules.judge(kind="verification", answer={"decisions": []}, gold={}, min_gold_accuracy=0).feedback
    v = rules.judge(kind="verification", answer={"decisions": [{"polygon": 4, "accept": False}]},
                    gold={"4": True}, min_gold_accuracy=1.0)
    assert not v.approve and v.gold_seen == 1


@pytest.mark.django_db
def test_task_url_seam_falls_back_to_our_own_path_without_the_tools(monkeypatch, settings, make_project):
    from django.core import signing

    from crowd import seams

    settings.PUBLIC_BASE_URL = "https://annotator.example.org"
    project = make_project()
    monkeypatch.setattr(seams, "_frontend_services", lambda: None)
    url, ref = seams.task_url_for(project=project, kind="categories", items=[1, 2], token="abc123")
    assert ref is None and url.startswith("https://annotator.example.org/tasks/categories/")
    signed = url.rstrip("/").rsplit("/", 1)[-1]
    assert signing.Signer(salt="crowd.task").unsign(signed) == "abc123"


def test_a_hit_reported_disposed_counts_as_gone():
    """Deleting a HIT another sync deleted first: our marketplace says InvalidHITState 'Disposed',
    MTurk's sandbox HitDoesNotExist; both mean the HIT is gone (the sync then carries on)."""
    from botocore.exceptions import ClientError

    from crowd.providers.base import InvalidState, NotFound
    from crowd.providers.mturk import _translate

    def error(code, message):
        return ClientError({"Error": {"Code": "RequestError", "Message": message}, "TurkErrorCode": code},
                           "DeleteHIT")

    gone = _translate(error("AWS.MechanicalTurk.InvalidHITState",
                            "This HIT is currently in the state 'Disposed'. This operation can be called with "
                            "a status of: Reviewable"), "DeleteHIT")
    assert isinstance(gone, NotFound)
    assert isinstance(_translate(error("AWS.MechanicalTurk.HitDoesNotExist", "Hit X does not exist."),
                                 "DeleteHIT"), NotFound)
    busy = _translate(error("AWS.MechanicalTurk.InvalidHITState",
                            "This HIT is currently in the state 'Assignable'. This operation can be called with "
                            "a status of: Reviewable"), "DeleteHIT")
    assert isinstance(busy, InvalidState) and not isinstance(busy, NotFound)
