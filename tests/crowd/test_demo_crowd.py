"""``manage.py demo_crowd``: the demo project's work for all five tools, published by a real Celery
worker through boto3 to our marketplace (live server), done by the demo worker over HTTP, and
approved and paid by the sync. Running it again publishes nothing."""
from __future__ import annotations

import io
import re
import time
from decimal import Decimal

import boto3
import pytest
import requests
from botocore.config import Config
from django.contrib.auth import get_user_model
from django.core.management import call_command

from crowd import services
from crowd.models import HIT, Assignment, CrowdStage
from datasets.models import Category
from tests.crowd.crowd_fixtures import make_images, make_project, make_stage  # noqa: F401
from tests.crowd.test_e2e import market, work_on  # noqa: F401
from tests.marketplace.conftest import Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]
KINDS = {"categories", "spotting", "segmentation", "verification", "training"}


@pytest.fixture
def demo(market, settings, tmp_path, celery_worker_factory):
    settings.VAR_DIR = tmp_path
    get_user_model().objects.create_superuser("admin", email="", password="Admin-pass-9182")
    call_command("load_demo", owner="admin", stdout=io.StringIO())
    worker = celery_worker_factory(env={
        "PUBLIC_BASE_URL": market.base, "MTURK_ENDPOINT_URL": market.endpoint, "CROWD_ALLOW_HTTP_LOOPBACK": "true",
        "MARKETPLACE_ALLOW_HTTP_LOOPBACK": "true", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    return market, worker


def run_demo_crowd() -> str:
    out = io.StringIO()
    call_command("demo_crowd", owner="admin", stdout=out)
    return out.getvalue()


def requester_client(settings, base: str):
    import json

    saved = json.loads((settings.VAR_DIR / "requester-key.json").read_text())
    return boto3.client("mturk", endpoint_url=base + "/mturk-api/", region_name="us-east-1",
                        aws_access_key_id=saved["aws_access_key_id"],
                        aws_secret_access_key=saved["aws_secret_access_key"],
                        config=Config(retries={"total_max_attempts": 1}))


def assignable_kinds(client) -> dict[str, int]:
    """Kinds (by our HIT rows) of the requester's Assignable HITs, counted."""
    remote = client.list_hits(MaxResults=100)["HITs"]
    ours = {f"annotator:hit:{h.pk}": h.stage.kind for h in HIT.objects.select_related("stage")}
    counts: dict[str, int] = {}
    for hit in remote:
        if hit["HITStatus"] == "Assignable" and hit["RequesterAnnotation"] in ours:
            kind = ours[hit["RequesterAnnotation"]]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def wait_for_all_kinds(client, worker, timeout: float = 90) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = assignable_kinds(client)
        if set(counts) == KINDS:
            return counts
        time.sleep(0.3)
    raise AssertionError(f"HITs of {KINDS - set(counts)} not published\n{worker.output()[-4000:]}")


def login(base: str, username: str, password: str) -> Worker:
    w = Worker(username, requests.Session(), base)
    w.get("/market/login/")
    response = w.post("/market/login/", {"username": username, "password": password}, allow_redirects=False)
    assert response.status_code == 302, response.text[:1000]
    w.worker_id = re.search(r"Your worker ID is <code>(A[A-Z0-9]{13})</code>", w.get("/market/").text)[1]
    return w


def test_demo_crowd_publishes_every_tool_and_the_demo_worker_gets_paid(demo, settings):
    market, celery = demo
    out = run_demo_crowd()
    password = re.search(r"Created the demo worker: worker / (\S+)", out)[1]
    path = settings.VAR_DIR / "worker-password.txt"
    assert path.read_text().strip() == password and path.stat().st_mode & 0o777 == 0o600
    client = requester_client(settings, market.base)
    counts = wait_for_all_kinds(client, celery)
    assert counts == {"categories": 1, "spotting": 2, "segmentation": 1, "verification": 1, "training": 1}
    assert Decimal(client.get_account_balance()["AvailableBalance"]) < Decimal("100")

    worker = login(market.base, "worker", password)
    home = worker.get("/market/").text
    for stage in CrowdStage.objects.all():
        assert stage.title in home  # every HIT group is listed

    stage = CrowdStage.objects.get(kind="categories")
    hit = HIT.objects.get(stage=stage)
    category = Category.objects.filter(project=stage.project).order_by("id").first()
    answer = {"schema": "annotator.answer/categories", "version": 1,
              "images": [{"image": pk, "present": [category.pk]} for pk in hit.items]}
    aid = work_on(worker, hit, answer)

    # Three answers are asked; the requester expires the HIT (admin action), then the sync pays.
    services.hit_expire(hit_id=hit.pk)
    report = services.stage_sync(stage_id=stage.pk)
    assert report.approved == 1
    assert Assignment.objects.get(provider_assignment_id=aid).state == Assignment.State.APPROVED
    earned = re.search(r"Earned <strong>\$([0-9.]+)</strong>", worker.get("/market/dashboard/").text)[1]
    assert Decimal(earned) == stage.reward


def test_demo_crowd_twice_publishes_nothing_new(demo, settings):
    market, celery = demo
    run_demo_crowd()
    client = requester_client(settings, market.base)
    wait_for_all_kinds(client, celery)
    before = (HIT.objects.count(), len(client.list_hits(MaxResults=100)["HITs"]), CrowdStage.objects.count())
    out = run_demo_crowd()
    assert "already published" in out and "Created the demo worker" not in out
    assert "Demo worker: worker (its password is in" in out
    assert (HIT.objects.count(), len(client.list_hits(MaxResults=100)["HITs"]), CrowdStage.objects.count()) == before


def test_launch_before_the_web_server_answers_is_retried(settings, make_project, make_images, make_stage):
    """demo_crowd queues the launch while `make run`'s web server may still be starting: a refused
    connection is a TransientProviderError, which the task retries with backoff."""
    from crowd import tasks
    from crowd.providers.base import TransientProviderError
    from crowd.providers.mturk import reset_clients
    from tests.services import free_port

    settings.MTURK_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}/mturk-api/"  # nothing listens
    settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY = "AKIDDEMO", "secret"
    settings.MTURK_MAX_ATTEMPTS = 1
    settings.CROWD_ALLOW_HTTP_LOOPBACK = True
    reset_clients()
    project = make_project()
    make_images(project, 2)
    stage = make_stage(project)
    try:
        with pytest.raises(TransientProviderError):
            services.stage_launch(stage_id=stage.pk)
    finally:
        reset_clients()
    assert TransientProviderError in tasks.stage_launch.autoretry_for
    assert tasks.stage_launch.max_retries >= 10 and tasks.stage_launch.retry_backoff
