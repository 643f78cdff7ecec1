"""Taking a task when many workers arrive at once (what the load benchmark found).

Every worker asking a HIT group for work is offered the group's first open HIT. An accept that
waited for another accept's row lock on that HIT held a web thread while it waited; instead it
takes the next HIT of the group, and waits only when every HIT it could take is being accepted.
Row locks are PostgreSQL's: these run in ``make test``'s PostgreSQL pass.
"""
from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from crowd.marketplace.models import HIT, Assignment
from tests.marketplace.conftest import hit_kwargs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]


@pytest.fixture
def market(live_server, settings):
    if connection.vendor != "postgresql":
        pytest.fail("row locks are PostgreSQL's: run this with `make test-postgres` (make test does)")
    from tests.marketplace.conftest import market_open

    m = market_open(live_server, settings)
    yield m
    m.close()


class RowHeld:
    """Another accept in progress: a transaction holding the HIT's row lock until released."""

    def __init__(self, hit_id: str, *, release_after: float | None = None) -> None:
        self.held, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(hit_id, release_after))

    def _hold(self, hit_id: str, release_after: float | None) -> None:
        try:
            with transaction.atomic():
                HIT.objects.select_for_update().get(hit_id=hit_id)
                self.held.set()
                self.release.wait(release_after or 60)
        finally:
            connection.close()

    def __enter__(self) -> "RowHeld":
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(30)


def accepted_hit(worker, group: str) -> str:
    response = worker.post(f"/market/groups/{group}/accept/", allow_redirects=False)
    assert response.status_code == 302, response.text[:500]
    assignment_id = response.headers["Location"].rstrip("/").split("/")[-1]
    return Assignment.objects.select_related("hit").get(assignment_id=assignment_id).hit.hit_id


def test_a_worker_takes_the_next_hit_while_another_accept_holds_the_first(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    first, second = (mturk.create_hit(**hit_kwargs(market, MaxAssignments=3))["HIT"] for _ in range(2))
    with RowHeld(first["HITId"]):
        # Answered while the first HIT is still held: it did not wait for it.
        assert accepted_hit(worker, first["HITTypeId"]) == second["HITId"]
    assert mturk.get_hit(HITId=first["HITId"])["HIT"]["NumberOfAssignmentsAvailable"] == 3


def test_when_every_open_hit_is_being_accepted_the_worker_waits_and_gets_a_slot(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    only = mturk.create_hit(**hit_kwargs(market, MaxAssignments=2))["HIT"]
    with RowHeld(only["HITId"], release_after=1.0):
        # Never "no more HITs" while a slot is free: the accept waits its turn on the lock.
        assert accepted_hit(worker, only["HITTypeId"]) == only["HITId"]
