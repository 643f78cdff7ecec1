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


def point_celery_at(app, url: str, options: dict) -> None:
    """Send this process's tasks to another broker, dropping every cached connection.

    Celery caches a connection pool and a producer pool built from the first broker it used;
    both must go, or tasks keep going to the old broker.
    """
    app.conf.broker_url = url
    app.conf.broker_transport_options = options
    # Not closed: kombu keeps pools per broker URL in a process-wide registry, and a closed one
    # would be handed out again the next time that URL is used.
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@pytest.fixture
def s3_storage(moto_s3, settings, monkeypatch):
    """Media on a fresh bucket of moto's S3 server, through django-storages: (boto3 client, bucket)."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = f"media-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=moto_s3.url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": bucket, "endpoint_url": moto_s3.url, "region_name": "us-east-1",
                    "file_overwrite": False, "default_acl": None, "querystring_auth": True}}}
    return s3, bucket


@pytest.fixture
def celery_worker_factory(transactional_db, redis_server, settings):
    """Start real Celery worker processes on the Redis broker, sharing the test database."""
    from annotator.celery import app

    started: list[CeleryWorker] = []
    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    settings.CELERY_BROKER_URL = redis_server.url
    point_celery_at(app, redis_server.url, {})

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
    point_celery_at(app, *saved)


@pytest.fixture
def celery_worker(celery_worker_factory):
    return celery_worker_factory()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium, headless, with nothing that reaches for the network."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}
