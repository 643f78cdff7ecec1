"""Rate limits: sign-in forms, the answer endpoint, externalSubmit and the requester API, each with
explicit low limits (the rest of the suite runs with generous ones from tests/testenv.py). Limits here are per hour:
a fixed window that ended mid-test would reset the count and hide a limit."""
from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from django.contrib.auth import get_user_model
from django.test import Client

from crowd.marketplace.models import Assignment
from frontend.models import TaskAnswer
from frontend.services import task_item_create, task_path
from tests.marketplace.conftest import hit_kwargs

SQUARE = [100.0, 100.0, 300.0, 100.0, 300.0, 300.0, 100.0, 300.0]


def seg_answer(task):
    return {"schema": "annotator.answer/segmentation", "version": 1, "point": task.point_id, "parts": [SQUARE]}


def assert_429(response, message: str):
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 3600
    text = response.content.decode()
    assert message in text and "Try again in" in text


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/login/", "/market/login/"])
def test_sign_in_is_limited_per_user_name_even_with_the_right_password(url, settings):
    settings.RATELIMIT_LOGIN_USER = "3/h"
    settings.RATELIMIT_LOGIN_IP = "100/m"
    get_user_model().objects.create_user("victim", password="Right-pass-4411", is_staff=True)
    client = Client()
    for guess in ("a-guess-1", "a-guess-2", "a-guess-3"):
        response = client.post(url, {"username": "victim", "password": guess})
        assert response.status_code == 200  # the form again, with its error
    blocked = client.post(url, {"username": "Victim", "password": "Right-pass-4411"})
    assert_429(blocked, "Too many sign-in attempts (3 allowed per hour)")
    assert "_auth_user_id" not in client.session
    # Another account is not held back by the attack on this one.
    get_user_model().objects.create_user("bystander", password="Other-pass-7752", is_staff=True)
    ok = client.post(url, {"username": "bystander", "password": "Other-pass-7752"})
    assert ok.status_code == 302


@pytest.mark.django_db
def test_sign_in_is_limited_per_address_across_user_names(settings):
    settings.RATELIMIT_LOGIN_IP = "4/h"
    settings.RATELIMIT_LOGIN_USER = "100/m"
    attacker, neighbour = Client(REMOTE_ADDR="203.0.113.7"), Client(REMOTE_ADDR="198.51.100.9")
    codes = [attacker.post("/market/login/", {"username": f"user{i}", "password": "x"}).status_code for i in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    # The admin's form shares the count: it is the same sign-in door.
    assert attacker.post("/admin/login/", {"username": "someone", "password": "x"}).status_code == 429
    assert neighbour.post("/market/login/", {"username": "user0", "password": "x"}).status_code == 200
    # Showing the form is not counted.
    assert attacker.get("/market/login/").status_code == 200


@pytest.mark.django_db
def test_sign_up_is_counted_with_sign_in(settings):
    settings.MARKETPLACE_OPEN_SIGNUP = True
    settings.RATELIMIT_LOGIN_IP = "3/h"
    client = Client(REMOTE_ADDR="203.0.113.20")
    for i in range(3):
        made = client.post("/market/signup/", {"username": f"bulk{i}", "country": "DE", "password1": "Sturdy-pass-9271",
                                               "password2": "Sturdy-pass-9271"})
        assert made.status_code == 302
        client.post("/market/logout/")
    refused = client.post("/market/signup/", {"username": "bulk9", "country": "DE", "password1": "Sturdy-pass-9271",
                                              "password2": "Sturdy-pass-9271"})
    assert_429(refused, "Too many sign-in attempts")
    assert not get_user_model().objects.filter(username="bulk9").exists()


@pytest.mark.django_db
def test_answer_endpoint_is_limited_per_worker_and_stores_nothing_over_the_limit(project, point, settings):
    settings.RATELIMIT_SUBMIT_WORKER = "2/h"
    task = task_item_create(kind="segmentation", project=project, point=point)
    url = task_path(task=task) + "answer"
    client = Client()

    def post(worker, assignment):
        body = {"host": {"assignmentId": assignment, "hitId": "H", "workerId": worker}, "answer": seg_answer(task)}
        return client.post(url, data=json.dumps(body), content_type="application/json")

    assert [post("W1", f"A{i}").status_code for i in range(2)] == [201, 201]
    refused = post("W1", "A3")
    assert_429(refused, "Too many submissions (2 allowed per hour)")
    assert refused.json()["ok"] is False
    assert not TaskAnswer.objects.filter(assignment_id="A3").exists()
    assert post("W2", "A4").status_code == 201  # another worker has their own count
    assert TaskAnswer.objects.count() == 3


@pytest.mark.django_db
def test_answer_endpoint_is_limited_per_address(project, point, settings):
    settings.RATELIMIT_SUBMIT_IP = "3/h"
    task = task_item_create(kind="segmentation", project=project, point=point)
    url = task_path(task=task) + "answer"
    crowd_of_one, other = Client(REMOTE_ADDR="203.0.113.50"), Client(REMOTE_ADDR="203.0.113.51")

    def post(client, n):
        body = {"host": {"assignmentId": f"A{n}", "hitId": "H", "workerId": f"W{n}"}, "answer": seg_answer(task)}
        return client.post(url, data=json.dumps(body), content_type="application/json")

    # Inventing a new worker id for every post does not get around the limit per address.
    assert [post(crowd_of_one, n).status_code for n in range(4)] == [201, 201, 201, 429]
    # Even junk is counted (before its own error would be answered).
    assert crowd_of_one.post(url, data="{", content_type="application/json").status_code == 429
    assert post(other, 10).status_code == 201
    assert TaskAnswer.objects.count() == 4


@pytest.mark.django_db
def test_an_unreachable_cache_lets_answers_through(project, point, settings, monkeypatch):
    """Redis restarting must not lose answers: the limit is skipped (and logged), not a 500."""
    import django_ratelimit.core

    class Down:
        def __getitem__(self, name):
            raise ConnectionError("redis is restarting")

    monkeypatch.setattr(django_ratelimit.core, "caches", Down())
    settings.RATELIMIT_SUBMIT_WORKER = "1/h"
    task = task_item_create(kind="segmentation", project=project, point=point)
    body = {"host": {"assignmentId": "A1", "hitId": "H", "workerId": "W1"}, "answer": seg_answer(task)}
    response = Client().post(task_path(task=task) + "answer", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201 and TaskAnswer.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_external_submit_is_limited_per_worker(market, settings):
    settings.RATELIMIT_SUBMIT_WORKER = "1/h"
    mturk = market.requester("req").client()
    worker = market.worker()
    first, second = (mturk.create_hit(**hit_kwargs(market))["HIT"]["HITId"] for _ in range(2))
    a1, a2 = worker.accept_assignment_id(first), worker.accept_assignment_id(second)
    assert worker.submit(a1, answer="one").status_code == 200
    refused = worker.submit(a2, answer="two")
    assert refused.status_code == 429 and "Too many submissions" in refused.text
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert Assignment.objects.get(assignment_id=a2).status == Assignment.Status.ACCEPTED


@pytest.mark.django_db(transaction=True)
def test_requester_api_throttling_is_retried_by_botocore(market, settings):
    """Over the bucket, MTurk's ThrottlingException; botocore's standard retry backs off and the
    call succeeds without the caller seeing an error."""
    settings.MARKETPLACE_API_RATE = 4.0
    settings.MARKETPLACE_API_BURST = 1.0
    requester = market.requester("req")
    mturk = boto3.client("mturk", endpoint_url=requester.endpoint, region_name="us-east-1",
                         aws_access_key_id=requester.access_key_id, aws_secret_access_key=requester.secret,
                         config=Config(retries={"mode": "standard", "total_max_attempts": 6}))
    retried = [mturk.get_account_balance()["ResponseMetadata"]["RetryAttempts"] for _ in range(3)]
    assert sum(retried) >= 1, retried
    # A client that does not retry sees the error as MTurk shapes it.
    bare = requester.client()
    with pytest.raises(bare.exceptions.ClientError) as err:
        for _ in range(3):
            bare.get_account_balance()
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["Error"]["Message"] == "Rate exceeded"


@pytest.mark.django_db
def test_behind_proxies_the_address_is_the_one_the_outermost_proxy_saw(settings):
    """X-Forwarded-For entries a client writes itself are not trusted: with one proxy in front,
    only the address that proxy appended counts."""
    settings.RATELIMIT_PROXY_COUNT = 1
    settings.RATELIMIT_LOGIN_IP = "2/h"
    settings.RATELIMIT_LOGIN_USER = "100/h"
    proxy = "10.0.0.2"  # every request reaches Django from the proxy

    def attempt(forwarded: str) -> int:
        client = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=forwarded)
        return client.post("/market/login/", {"username": "someone", "password": "x"}).status_code

    # The attacker varies what it writes; the proxy appends the real address last.
    assert [attempt(f"198.51.100.{i}, 203.0.113.66") for i in range(3)] == [200, 200, 429]
    # Another client behind the same proxy is not held back.
    assert attempt("203.0.113.67") == 200
    settings.RATELIMIT_PROXY_COUNT = 0  # no proxy: the header is ignored, REMOTE_ADDR counts
    assert [attempt(f"203.0.113.{i}") for i in (97, 98, 99)] == [200, 200, 429]


@pytest.mark.services
@pytest.mark.django_db
def test_limits_are_shared_through_redis_in_production(redis_server, project, point, settings):
    """With CACHE_URL on Redis (production), the count lives in Redis, so every web process and
    machine sees the same one: a second, separate cache connection finds the limit spent."""
    import redis
    from django.core.cache import caches

    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    settings.RATELIMIT_SUBMIT_WORKER = "2/h"
    redis.Redis.from_url(url).flushdb()
    task = task_item_create(kind="segmentation", project=project, point=point)
    answer_url = task_path(task=task) + "answer"

    def post(assignment):
        body = {"host": {"assignmentId": assignment, "hitId": "H", "workerId": "W-redis"}, "answer": seg_answer(task)}
        return Client().post(answer_url, data=json.dumps(body), content_type="application/json").status_code

    assert [post("R1"), post("R2")] == [201, 201]
    assert redis.Redis.from_url(url).dbsize() >= 1  # the counters are in Redis
    caches["default"].close()
    del caches["default"]  # as another process would: a fresh connection, nothing in memory
    assert post("R3") == 429
    redis.Redis.from_url(url).flushdb()
