"""Taking and submitting work with fewer queries keeps every count and every check.

``assignment_accept`` counts a HIT's assignments once (with whether this worker holds one) and
adds the new one to the counts; ``assignment_submit`` moves one from pending to submitted; both
under the HIT's row lock. After any mix of accept, submit, return and abandonment the stored
counters equal a recount, and the refusals (blocked, not invited, twice, not yours, submitted
twice) are as before.
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from crowd.marketplace import clock, services
from crowd.marketplace.models import HIT, Assignment

QUESTION = ('<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/'
            'ExternalQuestion.xsd"><ExternalURL>https://example.com/task</ExternalURL>'
            '<FrameHeight>600</FrameHeight></ExternalQuestion>')

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


@pytest.fixture(autouse=True)
def quick_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def account():
    user = get_user_model().objects.create_user("flow-requester")
    key, _ = services.requester_key_create(user=user)
    return services.account_top_up(account=key.account, amount=Decimal("100"))


def make_hit(account, max_assignments: int = 3) -> HIT:
    hit_type = services.hit_type_get_or_create(
        account=account, title="Label", description="Label the photos.", reward="0.10", assignment_duration=600)
    return services.hit_create(account=account, hit_type=hit_type, question=QUESTION, lifetime=3600,
                               max_assignments=max_assignments)


def make_worker(account, name: str, *, invited: bool = True):
    invite = services.worker_invite_create(account=account) if invited else None
    return services.worker_sign_up(username=name, password="Sturdy-pass-9271",
                                   invite_code=invite.code if invite else "")


def assert_counts_exact(hit: HIT) -> None:
    hit.refresh_from_db()
    stored = (hit.num_pending, hit.num_submitted, hit.num_completed, hit.num_available)
    services._recount(hit)
    assert stored == (hit.num_pending, hit.num_submitted, hit.num_completed, hit.num_available)


def test_counts_stay_exact_through_accept_submit_return_and_abandon(account, monkeypatch):
    hit = make_hit(account, max_assignments=3)
    a, b, c, d = (make_worker(account, f"w{i}") for i in range(4))

    first = services.assignment_accept(worker=a, hit_id=hit.hit_id)
    assert_counts_exact(hit)
    assert (hit.num_pending, hit.num_available) == (1, 2)
    services.assignment_accept(worker=b, hit_id=hit.hit_id)
    services.assignment_submit(worker=a, assignment_id=first.assignment_id, fields=[("answer", "yes")])
    assert_counts_exact(hit)
    assert (hit.num_pending, hit.num_submitted, hit.num_available) == (1, 1, 1)

    third = services.assignment_accept(worker=c, hit_id=hit.hit_id)
    assert_counts_exact(hit)
    assert hit.num_available == 0
    with pytest.raises(services.WorkerError, match="All assignments"):
        services.assignment_accept(worker=d, hit_id=hit.hit_id)

    services.assignment_return(worker=c, assignment_id=third.assignment_id)
    assert_counts_exact(hit)
    later = clock.now() + timedelta(seconds=601)  # b's assignment runs out and is abandoned
    monkeypatch.setattr(clock, "now", lambda: later)
    services.catch_up()
    assert_counts_exact(hit)
    assert (hit.num_pending, hit.num_submitted, hit.num_available) == (0, 1, 2)
    services.assignment_accept(worker=d, hit_id=hit.hit_id)
    assert_counts_exact(hit)
    assert (hit.num_pending, hit.num_available) == (1, 1)


def test_accept_still_refuses_what_it_refused(account):
    hit = make_hit(account)
    worker = make_worker(account, "worker")
    stranger = make_worker(account, "stranger", invited=False)
    blocked = make_worker(account, "blocked")
    services.worker_block_create(account=account, worker=blocked, reason="spam")

    with pytest.raises(services.WorkerError, match="not offered to you"):
        services.assignment_accept(worker=stranger, hit_id=hit.hit_id)
    with pytest.raises(services.WorkerError, match="not offered to you"):
        services.assignment_accept(worker=blocked, hit_id=hit.hit_id)
    services.assignment_accept(worker=worker, hit_id=hit.hit_id)
    with pytest.raises(services.WorkerError, match="each worker may do it once"):
        services.assignment_accept(worker=worker, hit_id=hit.hit_id)
    account.is_public = True
    account.save(update_fields=["is_public"])
    services.assignment_accept(worker=stranger, hit_id=hit.hit_id)  # public: every worker but the blocked
    with pytest.raises(services.WorkerError, match="not offered to you"):
        services.assignment_accept(worker=blocked, hit_id=hit.hit_id)
    assert_counts_exact(hit)
    assert Assignment.objects.filter(hit=hit).count() == 2


def test_submit_counts_once_and_only_for_the_worker_who_holds_it(account):
    hit = make_hit(account)
    worker = make_worker(account, "worker")
    other = make_worker(account, "other")
    assignment = services.assignment_accept(worker=worker, hit_id=hit.hit_id)

    with pytest.raises(services.WorkerError, match="not yours"):
        services.assignment_submit(worker=other, assignment_id=assignment.assignment_id, fields=[])
    with pytest.raises(services.WorkerError, match="not yours"):
        services.assignment_submit(worker=worker, assignment_id="NO-SUCH-ASSIGNMENT", fields=[])
    done = services.assignment_submit(worker=worker, assignment_id=assignment.assignment_id,
                                      fields=[("assignmentId", assignment.assignment_id), ("q", "a & b")])
    assert done.status == Assignment.Status.SUBMITTED
    with pytest.raises(services.WorkerError, match="already submitted"):
        services.assignment_submit(worker=worker, assignment_id=assignment.assignment_id, fields=[])
    stored = Assignment.objects.get(pk=assignment.pk)
    assert stored.status == Assignment.Status.SUBMITTED and "a &amp; b" in stored.answer
    assert "assignmentId" not in stored.answer
    assert stored.auto_approval_time == stored.submit_time + timedelta(seconds=hit.hit_type.auto_approval_delay)
    assert_counts_exact(hit)
    assert (hit.num_pending, hit.num_submitted) == (0, 1)
