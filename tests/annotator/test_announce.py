"""Answers announced to Celery through Redis share a drain message (annotator/announce.py).

A real Celery worker on Redis, with Redis as the cache as in production: fifty ids announced
one by one are each run once, by one or two drain messages instead of fifty; a drain whose
task fails on one id puts back the ids it had not done; without Redis each id is its own
message.
"""
from __future__ import annotations

import re
import time

import pytest
import redis
from django.core.cache import caches

from annotator import announce as announce_module
from annotator.announce import announce, drain_announced
from annotator.celery import app


@pytest.fixture
def redis_cache(redis_server, settings):
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings.CACHES = {"default": {"BACKEND": "annotator.cache.RedisCache", "LOCATION": url}}
    yield url, client
    caches["default"].close()
    try:
        del caches["default"]  # the next test builds its cache from its own settings
    except AttributeError:
        pass
    client.flushdb()


def test_fifty_announcements_are_drained_once_each_by_a_few_messages(redis_cache, celery_worker_factory):
    url, client = redis_cache
    worker = celery_worker_factory(env={"CACHE_URL": url})
    for ident in range(1, 51):
        announce("annotator.ping", ident)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline:
        out = worker.output()
        done = sum(int(n) for n in re.findall(r"annotator\.drain_announced\[[^\]]+\] succeeded in [\d.]+s: "
                                              r"\{'done': (\d+)\}", out))
        if done >= 50 and client.scard("announce:annotator.ping:ids") == 0:
            break
        time.sleep(0.2)
    out = worker.output()
    drains = len(re.findall(r"Task annotator\.drain_announced\[[^\]]+\] received", out))
    assert done == 50, out[-3000:]
    assert 1 <= drains <= 3  # one message per second at most, not one per answer
    assert "Task annotator.ping[" not in out  # no message of its own for any id
    assert client.scard("announce:annotator.ping:ids") == 0


def test_a_failing_id_puts_back_what_the_drain_had_not_done(redis_cache, monkeypatch):
    _, client = redis_cache
    ran: list[int] = []

    @app.task(name="tests.announce_listener")
    def listener(ident: int) -> None:
        if ident == 3:
            raise RuntimeError("no database for id 3")
        ran.append(ident)

    sent: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append(name))
    for ident in (5, 1, 3, 2, 4):
        announce("tests.announce_listener", ident)
    assert sent == ["annotator.drain_announced"]  # one drain asked for, for all five
    with pytest.raises(RuntimeError):  # in a worker, Celery's retry with backoff
        drain_announced.run("tests.announce_listener")
    assert ran == [1, 2]  # in order, up to the failing one
    left = sorted(int(i) for i in client.smembers("announce:tests.announce_listener:ids"))
    assert left == [3, 4, 5]
    del app.tasks["tests.announce_listener"]


def test_without_redis_each_id_is_its_own_message(monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append((name, args)))
    assert announce_module._redis() is None  # the tests' cache is in memory
    announce("not.a.registered.task", 7)
    announce("not.a.registered.task", 8)
    assert sent == [("not.a.registered.task", [7]), ("not.a.registered.task", [8])]
