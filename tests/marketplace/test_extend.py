"""CreateAdditionalAssignmentsForHIT through the unmodified boto3 client, workers over HTTP."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from tests.marketplace.conftest import hit_kwargs

pytestmark = [pytest.mark.django_db(transaction=True)]


def turk_code(err: pytest.ExceptionInfo) -> str:
    return err.value.response.get("TurkErrorCode") or err.value.response["Error"]["Code"]


def test_a_finished_hit_becomes_assignable_again_and_the_new_slot_is_held(market):
    req = market.requester("req", balance="1")
    mturk = req.client()
    alice, bob = market.worker("alice"), market.worker("bob")
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=1))["HIT"]["HITId"]
    assert alice.submit(alice.accept_assignment_id(hit_id), label="cat").status_code == 200
    hit = mturk.get_hit(HITId=hit_id)["HIT"]
    assert hit["HITStatus"] == "Reviewable" and hit["NumberOfAssignmentsAvailable"] == 0
    assert mturk.get_account_balance()["OnHoldBalance"] == "0.06"

    mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=1,
                                                UniqueRequestToken="more-1")
    hit = mturk.get_hit(HITId=hit_id)["HIT"]
    assert hit["HITStatus"] == "Assignable" and hit["MaxAssignments"] == 2
    assert hit["NumberOfAssignmentsAvailable"] == 1
    # One more slot of 0.05 + 0.01 is held, as CreateHIT holds its slots.
    balance = mturk.get_account_balance()
    assert balance == {**balance, "AvailableBalance": "0.88", "OnHoldBalance": "0.12"}

    # The same token again (a retried call): refused with the earlier request named, not extended.
    with pytest.raises(ClientError) as err:
        mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=1,
                                                    UniqueRequestToken="more-1")
    assert "UniqueRequestToken" in str(err.value) and "already extended" in str(err.value)
    assert mturk.get_hit(HITId=hit_id)["HIT"]["MaxAssignments"] == 2
    assert mturk.get_account_balance()["OnHoldBalance"] == "0.12"

    assert bob.submit(bob.accept_assignment_id(hit_id), label="dog").status_code == 200
    assert len(mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"]) == 2
    assert mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"] == "Reviewable"


def test_an_open_hit_grows_without_a_token(market):
    mturk = market.requester("req", balance="10").client()
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=2))["HIT"]["HITId"]
    mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=3)
    hit = mturk.get_hit(HITId=hit_id)["HIT"]
    assert hit["MaxAssignments"] == 5 and hit["NumberOfAssignmentsAvailable"] == 5
    assert mturk.get_account_balance()["OnHoldBalance"] == "0.30"


def test_refusals_change_nothing(market):
    mturk = market.requester("req", balance="0.30").client()
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=4))["HIT"]["HITId"]

    with pytest.raises(ClientError) as err:  # must be at least 1
        mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=0)
    assert turk_code(err) in ("AWS.ParameterOutOfRange", "ValidationException")
    with pytest.raises(ClientError) as err:  # from fewer than 10 to 10 or more
        mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=6)
    assert turk_code(err) == "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease"
    with pytest.raises(ClientError) as err:  # 0.06 left, two more slots need 0.12
        mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=2,
                                                    UniqueRequestToken="too-dear")
    assert turk_code(err) == "AWS.MechanicalTurk.InsufficientFunds"
    assert mturk.get_hit(HITId=hit_id)["HIT"]["MaxAssignments"] == 4
    assert mturk.get_account_balance()["AvailableBalance"] == "0.06"
    # The refused call did not use up its token.
    mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=1,
                                                UniqueRequestToken="too-dear")
    assert mturk.get_hit(HITId=hit_id)["HIT"]["MaxAssignments"] == 5
    assert mturk.get_account_balance()["AvailableBalance"] == "0.00"


def test_expired_and_deleted_hits_cannot_grow(market):
    mturk = market.requester("req", balance="10").client()
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=1))["HIT"]["HITId"]
    mturk.update_expiration_for_hit(HITId=hit_id, ExpireAt=datetime.now(timezone.utc) - timedelta(minutes=1))
    with pytest.raises(ClientError) as err:
        mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=1)
    assert turk_code(err) == "AWS.MechanicalTurk.InvalidHITState" and "Expired" in str(err.value)
    mturk.delete_hit(HITId=hit_id)
    with pytest.raises(ClientError) as err:
        mturk.create_additional_assignments_for_hit(HITId=hit_id, NumberOfAdditionalAssignments=1)
    assert turk_code(err) == "AWS.MechanicalTurk.InvalidHITState" and "Disposed" in str(err.value)
    with pytest.raises(ClientError) as err:
        mturk.create_additional_assignments_for_hit(HITId="3NOSUCHHIT0000000000000000000",
                                                    NumberOfAdditionalAssignments=1)
    assert turk_code(err) == "AWS.MechanicalTurk.HitDoesNotExist"


def test_the_crowd_adapter_reads_a_repeated_token_as_done(market):
    from crowd.providers.base import AlreadyExists, InvalidState
    from crowd.providers.mturk import MTurkProvider

    mturk = market.requester("req", balance="10").client()
    provider = MTurkProvider(mturk)
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=1))["HIT"]["HITId"]
    provider.unit_add_assignments(hit_id, 1, token="t-2")
    with pytest.raises(AlreadyExists):
        provider.unit_add_assignments(hit_id, 1, token="t-2")
    assert provider.unit_get(hit_id).max_assignments == 2
    mturk.update_expiration_for_hit(HITId=hit_id, ExpireAt=datetime.now(timezone.utc) - timedelta(minutes=1))
    with pytest.raises(InvalidState):
        provider.unit_add_assignments(hit_id, 1, token="t-3")
