"""Every error shape, as boto3 sees it and as raw HTTP carries it."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.marketplace.conftest import hit_kwargs, run_command

pytestmark = pytest.mark.django_db(transaction=True)


def signed_post(market, req, target: str, body: dict | str, *, when: datetime | None = None,
                secret: str | None = None, tamper=None) -> requests.Response:
    """A request signed with botocore's signer, sent with plain requests (to reach what boto3 would refuse)."""
    data = body if isinstance(body, str) else json.dumps(body)
    aws = AWSRequest(method="POST", url=market.endpoint, data=data.encode(), headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"MTurkRequesterServiceV20170117.{target}"})
    signer = SigV4Auth(Credentials(req.access_key_id, secret or req.secret), "mturk-requester", "us-east-1")
    if when is not None:
        from unittest import mock

        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            signer.add_auth(aws)
    else:
        signer.add_auth(aws)
    headers = dict(aws.headers.items())
    body_bytes = aws.body
    if tamper:
        headers, body_bytes = tamper(headers, body_bytes)
    return requests.post(market.endpoint, data=body_bytes, headers=headers)


def test_unknown_hit_is_a_request_error_like_mturk(market):
    mturk = market.requester("req").client()
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.get_hit(HITId="3XXXXXXXXXXXXXXXXXXXXXXXXXXXXX")
    response = err.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Message"].startswith("Hit 3XXXXXXXXXXXXXXXXXXXXXXXXXXXXX does not exist.")
    assert response["TurkErrorCode"] == "AWS.MechanicalTurk.HitDoesNotExist"
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.get_assignment(AssignmentId="3YYYYYYYYYYYYYYYYYYYYYYYYYYYYY")
    assert "Assignment 3YYYYYYYYYYYYYYYYYYYYYYYYYYYYY does not exist" in err.value.response["Error"]["Message"]


def test_unknown_key_and_bad_secret(market):
    req = market.requester("req")
    stranger = boto3.client("mturk", endpoint_url=market.endpoint, region_name="us-east-1",
                            aws_access_key_id="AKMKNOSUCHKEY0000000", aws_secret_access_key="x" * 40,
                            config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as err:
        stranger.get_account_balance()
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    wrong = boto3.client("mturk", endpoint_url=market.endpoint, region_name="us-east-1",
                         aws_access_key_id=req.access_key_id, aws_secret_access_key=req.secret + "x",
                         config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as err:
        wrong.get_account_balance()
    assert err.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_tampered_body_and_unsigned_requests_are_refused(market):
    req = market.requester("req")
    ok = signed_post(market, req, "GetAccountBalance", {})
    assert ok.status_code == 200 and ok.json()["AvailableBalance"] == "1000.00"

    def swap_body(headers, body):
        return headers, json.dumps({"HITId": "other"}).encode()

    tampered = signed_post(market, req, "GetAccountBalance", {}, tamper=swap_body)
    assert tampered.status_code == 403 and tampered.json()["__type"] == "InvalidSignatureException"

    def swap_target(headers, body):
        return {**headers, "X-Amz-Target": "MTurkRequesterServiceV20170117.ListHITs"}, body

    assert signed_post(market, req, "GetAccountBalance", {}, tamper=swap_target).status_code == 403

    unsigned = requests.post(market.endpoint, data=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "MTurkRequesterServiceV20170117.ListHITs"})
    assert unsigned.status_code == 403 and unsigned.json()["__type"] == "MissingAuthenticationTokenException"


def test_old_signatures_are_refused(market):
    req = market.requester("req")
    stale = signed_post(market, req, "GetAccountBalance", {}, when=datetime.now(timezone.utc) - timedelta(minutes=16))
    assert stale.status_code == 403
    assert stale.json()["__type"] == "InvalidSignatureException" and "Signature expired" in stale.json()["message"]
    recent = signed_post(market, req, "GetAccountBalance", {}, when=datetime.now(timezone.utc) - timedelta(minutes=5))
    assert recent.status_code == 200


def test_revoked_key_stops_working(market):
    from crowd.marketplace.models import RequesterKey
    from crowd.marketplace.services import requester_key_revoke

    req = market.requester("req")
    mturk = req.client()
    mturk.get_account_balance()
    requester_key_revoke(key=RequesterKey.objects.get(access_key_id=req.access_key_id))
    with pytest.raises(ClientError) as err:
        mturk.get_account_balance()
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_secrets_are_stored_encrypted(market):
    from crowd.marketplace.models import RequesterKey

    req = market.requester("req")
    stored = RequesterKey.objects.get(access_key_id=req.access_key_id).secret_encrypted
    assert req.secret not in stored and stored.startswith("gAAAA")  # a Fernet token


def test_throttling_is_a_throttling_exception(market, settings):
    settings.MARKETPLACE_API_RATE = 0.001
    settings.MARKETPLACE_API_BURST = 3
    mturk = market.requester("req").client()
    for _ in range(3):
        mturk.get_account_balance()
    with pytest.raises(ClientError) as err:
        mturk.get_account_balance()
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Another key has its own bucket.
    market.requester("other").client().get_account_balance()


def test_bad_parameters(market):
    req = market.requester("req")
    mturk = req.client()
    # What boto3 would refuse client-side, the server refuses too, in AWS's words.
    raw = signed_post(market, req, "CreateHIT", {"Title": "t" * 200, "MaxAssignments": "three"})
    assert raw.status_code == 400
    body = raw.json()
    assert body["__type"] == "ValidationException"
    assert "Value null at 'description' failed to satisfy constraint: Member must not be null" in body["message"]
    assert "maxAssignments" in body["message"]
    unknown = signed_post(market, req, "GetHIT", {"HITId": "X", "Bogus": 1})
    assert unknown.status_code == 400 and "Unknown parameter 'bogus'" in unknown.json()["message"]
    not_json = signed_post(market, req, "GetHIT", "{nope")
    assert not_json.status_code == 400 and not_json.json()["__type"] == "RequestError"
    unsupported = signed_post(market, req, "GetFileUploadURL", {"AssignmentId": "A", "QuestionIdentifier": "q"})
    assert unsupported.status_code == 400 and unsupported.json()["__type"] == "UnknownOperationException"

    with pytest.raises(ClientError) as err:
        mturk.create_hit(**hit_kwargs(market, Reward="$0.05"))  # the model's CurrencyAmount pattern
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "Value '$0.05' at 'reward'" in err.value.response["Error"]["Message"]
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_hit(**hit_kwargs(market, Title="t" * 129))
    assert "limit is 128" in err.value.response["Error"]["Message"]
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_hit(**hit_kwargs(market, Reward="0.00"))
    assert "at least $0.01" in err.value.response["Error"]["Message"]
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_hit(**hit_kwargs(market, Question="<ExternalQuestion>"))
    assert err.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.XMLParseError"
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_hit(**hit_kwargs(market, Question=market.question().replace(market.base, "http://example.com")))
    assert "HTTPS" in err.value.response["Error"]["Message"]
    big = "<HTMLQuestion xmlns=\"x\">" + "a" * 70_000 + "</HTMLQuestion>"
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_hit(**hit_kwargs(market, Question=big))
    assert "64 KB" in err.value.response["Error"]["Message"]
    xxe = ('<?xml version="1.0"?><!DOCTYPE q [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           '<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/'
           'ExternalQuestion.xsd"><ExternalURL>https://a.example/&x;</ExternalURL><FrameHeight>1</FrameHeight>'
           '</ExternalQuestion>')
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.create_hit(**hit_kwargs(market, Question=xxe))
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.list_hits(NextToken="forged")
    assert "NextToken" in err.value.response["Error"]["Message"]


def test_https_external_urls_and_html_questions_are_accepted(market, settings):
    settings.MARKETPLACE_ALLOW_HTTP_LOOPBACK = False
    mturk = market.requester("req").client()
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.create_hit(**hit_kwargs(market))  # loopback http is off now
    q = market.question().replace(market.base, "https://tasks.example.org")
    assert mturk.create_hit(**hit_kwargs(market, Question=q))["HIT"]["HITStatus"] == "Assignable"
    html = ('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/'
            'HTMLQuestion.xsd"><HTMLContent><![CDATA[<form><input name="a"></form>]]></HTMLContent>'
            '<FrameHeight>400</FrameHeight></HTMLQuestion>')
    assert mturk.create_hit(**hit_kwargs(market, Question=html))["HIT"]["Question"] == html


def test_insufficient_funds(market):
    mturk = market.requester("poor", balance="0.10").client()
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.create_hit(**hit_kwargs(market, Reward="0.10", MaxAssignments=1))
    assert err.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.InsufficientFunds"
    assert mturk.list_hits()["NumResults"] == 0
    run_command("marketplace_top_up", "poor", "5")
    assert mturk.get_account_balance()["AvailableBalance"] == "5.10"


def test_wrong_state_transitions(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market))["HIT"]["HITId"]
    aid = worker.accept_assignment_id(hit_id)
    worker.submit(aid, a="1")
    mturk.approve_assignment(AssignmentId=aid)
    with pytest.raises(mturk.exceptions.RequestError) as err:
        mturk.approve_assignment(AssignmentId=aid)
    assert err.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.InvalidAssignmentState"
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.reject_assignment(AssignmentId=aid, RequesterFeedback="no")
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.update_hit_review_status(HITId=hit_id, Revert=True)  # not Reviewing
    mturk.update_hit_review_status(HITId=hit_id)
    assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Reviewing"
    assert [h["HITId"] for h in mturk.list_reviewable_hits(Status="Reviewing")["HITs"]] == [hit_id]
    assert mturk.list_reviewable_hits()["NumResults"] == 0
    mturk.update_hit_review_status(HITId=hit_id, Revert=True)
    assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Reviewable"
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.send_bonus(WorkerId="A0000000000000", AssignmentId=aid, BonusAmount="1", Reason="r")


def test_override_rejection(market):
    mturk = market.requester("req", balance="1").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, Reward="0.20"))["HIT"]["HITId"]
    aid = worker.accept_assignment_id(hit_id)
    worker.submit(aid, a="1")
    mturk.reject_assignment(AssignmentId=aid, RequesterFeedback="no")
    assert mturk.get_account_balance()["AvailableBalance"] == "1.00"
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.approve_assignment(AssignmentId=aid)
    mturk.approve_assignment(AssignmentId=aid, OverrideRejection=True)
    assert mturk.get_assignment(AssignmentId=aid)["Assignment"]["AssignmentStatus"] == "Approved"
    assert mturk.get_account_balance()["AvailableBalance"] == "0.76"


def test_money_of_an_expired_hit_is_usable_at_once(market, time_machine):
    mturk = market.requester("req", balance="0.12").client()
    mturk.create_hit(**hit_kwargs(market, Reward="0.10", LifetimeInSeconds=60))
    assert mturk.get_account_balance()["AvailableBalance"] == "0.00"
    time_machine.advance(seconds=61)
    # No read in between: CreateHIT itself finds the released money.
    assert mturk.create_hit(**hit_kwargs(market, Reward="0.10"))["HIT"]["HITStatus"] == "Assignable"
