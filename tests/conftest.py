"""Fixtures shared by the whole suite: real services on loopback, the browser, factories."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

from tests.services import CeleryWorker, MotoS3Server, RedisServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_s3():
    server = MotoS3Server().start()
    yield server
    server.stop()


def database_url_for_workers() -> str:
    """The URL of the database the tests are using, for processes started beside them."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@pytest.fixture
def celery_worker_factory(transactional_db, redis_server, settings):
    """Start real Celery worker processes on the Redis broker, sharing the test database."""
    from annotator.celery import app

    started: list[CeleryWorker] = []
    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    settings.CELERY_BROKER_URL = redis_server.url
    app.conf.broker_url = redis_server.url
    app.conf.broker_transport_options = {}
    app.close()

    def start(**kwargs) -> CeleryWorker:
        env = {
            "CELERY_BROKER_URL": redis_server.url,
            "DATABASE_URL": database_url_for_workers(),
            "ANNOTATOR_VAR_DIR": os.environ["ANNOTATOR_VAR_DIR"],
        }
        env.update(kwargs.pop("env", {}))
        worker = CeleryWorker(env, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    app.conf.broker_url, app.conf.broker_transport_options = saved
    app.close()


@pytest.fixture
def celery_worker(celery_worker_factory):
    return celery_worker_factory()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium, headless, with nothing that reaches for the network."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}
