"""The Redis cache backend that keeps its clients, and rate limits counted in one Redis round trip."""
from __future__ import annotations

import pytest
import redis
from django.core.cache import caches
from django.test import RequestFactory

from annotator import ratelimit
from annotator.cache import RedisCache


@pytest.fixture
def redis_cache(redis_server, settings):
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    settings.CACHES = {"default": {"BACKEND": "annotator.cache.RedisCache", "LOCATION": url}}
    cache = caches["default"]
    yield cache, redis.Redis.from_url(url)
    cache.close()
    del caches["default"]
    redis.Redis.from_url(url).flushdb()


def test_settings_use_it_for_redis_urls(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.CACHES['default']['BACKEND'])")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "annotator.settings", "ANNOTATOR_VAR_DIR": str(tmp_path)}
    for url, backend in [("redis://127.0.0.1:6379/1", "annotator.cache.RedisCache"),
                         ("locmemcache://", "django.core.cache.backends.locmem.LocMemCache")]:
        out = subprocess.run([sys.executable, "-c", code], env={**env, "CACHE_URL": url}, capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == backend


def test_one_client_serves_every_call_and_the_cache_works_as_django_s(redis_cache):
    cache, _ = redis_cache
    assert isinstance(cache, RedisCache)
    client = cache._cache.get_client("a", write=True)
    assert cache._cache.get_client("b", write=True) is client
    assert cache._cache.get_client("c") is client  # one server: reads use the same pool
    cache.set("n", 1)
    assert cache.incr("n") == 2
    assert cache.add("n", 5) is False
    cache.set("obj", {"a": [1, 2]})
    assert cache.get("obj") == {"a": [1, 2]}
    cache.delete("obj")
    assert cache.get("obj") is None
    with pytest.raises(ValueError):
        cache.incr("missing")


def test_a_limit_counts_in_redis_with_its_window_and_refuses_past_it(redis_cache, settings):
    _, raw = redis_cache
    settings.RATELIMIT_SUBMIT_WORKER = "3/m"
    request = RequestFactory().post("/tasks/x/y/answer", REMOTE_ADDR="10.1.2.3")
    refusals = [ratelimit.submission_worker_refusal(request, group="tools-answer", worker_id="W1")
                for _ in range(4)]
    assert refusals[:3] == [None, None, None]
    assert refusals[3] is not None and "3 allowed per minute" in refusals[3].message
    assert 1 <= refusals[3].retry_after <= 60
    keys = raw.keys("*")
    assert len(keys) == 1 and int(raw.get(keys[0])) == 4
    assert 0 < raw.ttl(keys[0]) <= 60 + 5  # the window and django-ratelimit's fudge: never kept forever
    # Another worker has a counter of its own.
    assert ratelimit.submission_worker_refusal(request, group="tools-answer", worker_id="W2") is None


def test_per_address_limits_count_the_client_address(redis_cache, settings):
    settings.RATELIMIT_SUBMIT_IP = "2/m"
    one = RequestFactory().post("/mturk/externalSubmit", REMOTE_ADDR="10.0.0.1")
    two = RequestFactory().post("/mturk/externalSubmit", REMOTE_ADDR="10.0.0.2")
    assert [ratelimit.submission_refusal(one, group="external-submit") is None for _ in range(3)] == [
        True, True, False]
    assert ratelimit.submission_refusal(two, group="external-submit") is None


def test_an_unreachable_redis_lets_requests_through(settings):
    settings.CACHES = {"default": {"BACKEND": "annotator.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}
    settings.RATELIMIT_SUBMIT_WORKER = "1/m"
    request = RequestFactory().post("/tasks/x/y/answer", REMOTE_ADDR="10.1.2.3")
    try:
        assert ratelimit.submission_worker_refusal(request, group="tools-answer", worker_id="W1") is None
        assert ratelimit.submission_worker_refusal(request, group="tools-answer", worker_id="W1") is None
    finally:
        caches["default"].close()
        del caches["default"]


def test_a_submission_counts_its_address_and_its_worker_in_one_round_trip(redis_cache, settings):
    _, raw = redis_cache
    settings.RATELIMIT_SUBMIT_IP = "5/m"
    settings.RATELIMIT_SUBMIT_WORKER = "2/m"
    request = RequestFactory().post("/mturk/externalSubmit", REMOTE_ADDR="10.0.0.9")
    raw.config_resetstat()
    results = [ratelimit.submission_refusal(request, group="external-submit", worker_id="W9") for _ in range(3)]
    stats = raw.info("commandstats")
    # One script run per submission (redis.call inside it is not a round trip of its own).
    assert sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")) == 3
    assert results[:2] == [None, None]
    assert results[2] is not None and "2 allowed per minute" in results[2].message  # the worker's limit
    keys = sorted(raw.keys("*"))
    assert len(keys) == 2 and sorted(int(raw.get(k)) for k in keys) == [3, 3]
    assert all(0 < raw.ttl(k) <= 60 + 5 for k in keys)
    # The address alone: another worker from the same address is refused once the address's 5 are used.
    other = [ratelimit.submission_refusal(request, group="external-submit", worker_id=f"X{i}") for i in range(3)]
    assert other[:2] == [None, None] and "5 allowed per minute" in other[2].message
