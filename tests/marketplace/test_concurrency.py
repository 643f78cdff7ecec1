"""Handing out work under concurrency: the last assignment goes to exactly one worker."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from tests.marketplace.conftest import hit_kwargs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_matrix]


def _race(workers, action):
    barrier = threading.Barrier(len(workers))
    results: list = [None] * len(workers)

    def run(i, w):
        try:
            barrier.wait()
            results[i] = action(w)
        finally:
            connection.close()  # this thread's own connection; left open, it outlives the test database

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_twenty_workers_race_for_three_assignments(market):
    mturk = market.requester("req").client()
    workers = [market.worker() for _ in range(20)]
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=3))["HIT"]["HITId"]

    codes = _race(workers, lambda w: w.accept(hit_id).status_code)
    assert sorted(codes) == [302] * 3 + [409] * 17, codes
    hit = mturk.get_hit(HITId=hit_id)["HIT"]
    assert hit["NumberOfAssignmentsPending"] == 3 and hit["NumberOfAssignmentsAvailable"] == 0
    assert hit["HITStatus"] == "Unassignable"


def test_one_worker_double_clicking_gets_one_assignment(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, MaxAssignments=5))["HIT"]["HITId"]
    codes = _race([worker] * 6, lambda w: w.accept(hit_id).status_code)
    assert sorted(codes) == [302] + [409] * 5, codes
    assert mturk.get_hit(HITId=hit_id)["HIT"]["NumberOfAssignmentsPending"] == 1


def test_group_accept_spreads_workers_over_the_hits_of_a_group(market):
    mturk = market.requester("req").client()
    workers = [market.worker() for _ in range(12)]
    hits = [mturk.create_hit(**hit_kwargs(market, MaxAssignments=2))["HIT"] for _ in range(5)]
    group = hits[0]["HITTypeId"]
    codes = _race(workers, lambda w: w.post(f"/market/groups/{group}/accept/", allow_redirects=False).status_code)
    assert sorted(codes) == [302] * 10 + [409] * 2, codes
    for h in hits:
        assert mturk.get_hit(HITId=h["HITId"])["HIT"]["NumberOfAssignmentsPending"] == 2


def test_concurrent_submits_of_one_assignment_count_once(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market))["HIT"]["HITId"]
    aid = worker.accept_assignment_id(hit_id)
    codes = _race([worker] * 5, lambda w: w.submit(aid, answer="x").status_code)
    assert sorted(codes) == [200] + [409] * 4, codes
    assert mturk.list_assignments_for_hit(HITId=hit_id)["NumResults"] == 1
