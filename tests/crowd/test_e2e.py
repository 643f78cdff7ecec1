"""End to end on our own marketplace, over HTTP only (live_server):

a requester key made as an operator would; a stage published through boto3 with the project's
encrypted credentials; workers who sign up, accept, open the real task page the marketplace
frames, post their answer to our server and the form to /mturk/externalSubmit; then the sync
approves, rejects with feedback and pays the bonus, all through boto3, and deletes the HITs.
"""
from __future__ import annotations

import html
import re
from decimal import Decimal

import pytest

from crowd import services
from crowd.models import HIT, Assignment, Payment
from crowd.providers.mturk import reset_clients
from datasets.models import Category
from tests.crowd.crowd_fixtures import make_images, make_project, make_stage  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def market(live_server, settings):
    from tests.marketplace.conftest import market_open  # the marketplace's own HTTP helpers (tests only)

    settings.PUBLIC_BASE_URL = live_server.url
    settings.MTURK_ENDPOINT_URL = live_server.url + "/mturk-api/"
    settings.CROWD_ALLOW_HTTP_LOOPBACK = True
    settings.TOOLS_FRAME_ANCESTORS = ["'self'", live_server.url]
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = ""  # only the project's own key
    reset_clients()
    m = market_open(live_server, settings)
    yield m
    m.close()
    reset_clients()


def work_on(worker, hit: HIT, answer: dict) -> str:
    aid = worker.accept_assignment_id(hit.provider_hit_id)
    page = worker.get(f"/market/work/{aid}/")
    assert page.status_code == 200, page.text[:500]
    src = html.unescape(re.search(r'<iframe class="task" src="([^"]+)"', page.text)[1])
    assert src.startswith(hit.task_url) and f"assignmentId={aid}" in src
    task = worker.session.get(src)  # the real task page, as the iframe loads it
    assert task.status_code == 200
    assert worker.base in task.headers["Content-Security-Policy"]  # frame-ancestors: the marketplace
    reply = worker.session.post(hit.task_url + "answer", json={
        "host": {"assignmentId": aid, "workerId": worker.worker_id, "hitId": hit.provider_hit_id},
        "answer": answer})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    done = worker.submit(aid, answerId=str(body["answer"]), summary=body.get("summary", ""))
    assert done.status_code == 200, done.text[:500]
    return aid


def test_publish_work_sync_and_pay_on_our_marketplace(market, make_project, make_images, make_stage):
    requester = market.requester("req", balance="100", public=True)
    project = make_project(budget="20.00")
    services.credentials_set(project=project, access_key_id=requester.access_key_id,
                             secret_access_key=requester.secret)
    images = make_images(project, 4)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    fork = Category.objects.create(project=project, coco_id=48, name="fork")
    stage = make_stage(project, max_assignments=2, min_approval_rate=None, min_approved_hits=None, locales=["US"],
                       gold={str(images[0].pk): [cup.pk]}, min_gold_accuracy=1.0, bonus=Decimal("0.05"),
                       bonus_min_gold_accuracy=1.0)

    plan, published = services.stage_launch(stage_id=stage.pk)
    assert published.published == 2
    mturk = requester.client()
    hits = list(HIT.objects.order_by("id"))
    for hit in hits:
        remote = mturk.get_hit(HITId=hit.provider_hit_id)["HIT"]
        assert remote["RequesterAnnotation"] == f"annotator:hit:{hit.pk}" and remote["MaxAssignments"] == 2

    careful, sloppy = market.worker(invite_of="req"), market.worker(invite_of="req")
    ids = {}
    for hit in hits:
        imgs = [i for i in images if i.pk in hit.items]

        def answer(present):
            return {"schema": "annotator.answer/categories", "version": 1,
                    "images": [{"image": i.pk, "present": present.get(i.pk, [])} for i in imgs]}

        ids[(hit.pk, "careful")] = work_on(careful, hit, answer({images[0].pk: [cup.pk]}))
        ids[(hit.pk, "sloppy")] = work_on(sloppy, hit, answer({images[0].pk: [fork.pk]}))

    # The sync runs as beat runs it (every minute) until nothing is left.
    report = services.stage_sync(stage_id=stage.pk)
    assert (report.approved, report.rejected, report.disposed) == (3, 1, 2)

    first, second = hits
    rejected = ids[(first.pk, "sloppy")]
    for (hit_pk, who), aid in ids.items():
        a = Assignment.objects.get(provider_assignment_id=aid)
        assert a.answer_source == "server"
        if aid == rejected:
            assert a.state == Assignment.State.REJECTED and "answered wrongly" in a.feedback
        else:
            assert a.state == Assignment.State.APPROVED
    bonuses = mturk.list_bonus_payments(AssignmentId=ids[(first.pk, "careful")])["BonusPayments"]
    assert [b["BonusAmount"] for b in bonuses] == ["0.05"] and bonuses[0]["WorkerId"] == careful.worker_id
    assert Payment.objects.get(kind="bonus").status == Payment.Status.PAID
    assert set(HIT.objects.values_list("status", flat=True)) == {HIT.Status.DISPOSED}
    # The worker sees the feedback on the dashboard.
    assert "answered wrongly" in html.unescape(sloppy.get("/market/dashboard/").text)
    # A second sync sends nothing: both HITs are gone from ListReviewableHITs.
    assert services.stage_sync(stage_id=stage.pk).hits == 0
    # 3 approvals x ($0.10 + $0.02) + a $0.05 bonus + $0.01 fee.
    balance = Decimal(mturk.get_account_balance()["AvailableBalance"])
    assert balance == Decimal("100") - Decimal("0.42")
