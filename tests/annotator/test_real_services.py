"""The real services the suite relies on start, answer, and are used by the platform's code."""
from __future__ import annotations

import redis

from annotator.celery import app, ping


def test_redis_server_answers(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    client.set("annotator:probe", "1")
    assert client.get("annotator:probe") == b"1"


def test_celery_worker_process_runs_a_task_from_redis(celery_worker):
    result = ping.apply_async(queue="annotator")
    # No result backend by default: watch the worker's own log for the task it received.
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = celery_worker.output()
        if f"Task annotator.ping[{result.id}] succeeded" in out:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the worker never ran the task:\n{celery_worker.output()[-3000:]}")
    assert app.conf.broker_url.startswith("redis://")
