"""Paginated lists through boto3's own paginators, and MaxResults/NextToken by hand."""
from __future__ import annotations

import pytest

from tests.marketplace.conftest import hit_kwargs

pytestmark = pytest.mark.django_db(transaction=True)


def test_boto3_paginators_walk_every_list(market):
    mturk = market.requester("req").client()
    other = market.requester("other").client()
    created = [mturk.create_hit(**hit_kwargs(market, RequesterAnnotation=str(i)))["HIT"]["HITId"] for i in range(23)]
    other.create_hit(**hit_kwargs(market))

    pages = list(mturk.get_paginator("list_hits").paginate(PaginationConfig={"PageSize": 5}))
    assert [p["NumResults"] for p in pages] == [5, 5, 5, 5, 3]
    assert [h["HITId"] for p in pages for h in p["HITs"]] == created
    assert "NextToken" not in pages[-1]

    first = mturk.list_hits(MaxResults=10)
    second = mturk.list_hits(MaxResults=10, NextToken=first["NextToken"])
    assert [h["HITId"] for h in first["HITs"] + second["HITs"]] == created[:20]
    with pytest.raises(mturk.exceptions.RequestError):  # a token is bound to its list
        mturk.list_worker_blocks(NextToken=first["NextToken"])
    # Another requester replaying the token still sees only their own HITs.
    assert all(h["HITId"] not in created for h in other.list_hits(NextToken=first["NextToken"])["HITs"])

    # Reviewable HITs and assignments page the same way.
    workers = [market.worker() for _ in range(7)]
    big = mturk.create_hit(**hit_kwargs(market, MaxAssignments=7))["HIT"]["HITId"]
    for w in workers:
        w.submit(w.accept_assignment_id(big), answer=w.username)
    assignments = [a for p in mturk.get_paginator("list_assignments_for_hit").paginate(
        HITId=big, PaginationConfig={"PageSize": 3}) for a in p["Assignments"]]
    assert sorted(a["WorkerId"] for a in assignments) == sorted(w.worker_id for w in workers)
    for h in created[:12]:
        mturk.update_expiration_for_hit(HITId=h, ExpireAt=0)
    reviewable = [h["HITId"] for p in mturk.get_paginator("list_reviewable_hits").paginate(
        PaginationConfig={"PageSize": 4}) for h in p["HITs"]]
    assert reviewable == created[:12] + [big]
    approved = [a["AssignmentId"] for a in assignments[:3]]
    for aid in approved:
        mturk.send_bonus(WorkerId=next(a["WorkerId"] for a in assignments if a["AssignmentId"] == aid),
                         AssignmentId=aid, BonusAmount="0.10", Reason="thanks")
    bonuses = [b for p in mturk.get_paginator("list_bonus_payments").paginate(
        HITId=big, PaginationConfig={"PageSize": 2}) for b in p["BonusPayments"]]
    assert sorted(b["AssignmentId"] for b in bonuses) == sorted(approved)


def test_max_results_is_bounded_by_the_model(market):
    mturk = market.requester("req").client(parameter_validation=False)
    with pytest.raises(Exception) as err:
        mturk.list_hits(MaxResults=101)
    assert "less than or equal to 100" in str(err.value)
