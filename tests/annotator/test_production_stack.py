"""The production shape, natively: gunicorn, a Celery worker and beat on PostgreSQL, Redis and
S3 (moto's server), configured only by the variables docker-compose.yml sets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import psycopg
import pytest

from tests.services import MotoS3Server, PostgresServer, RedisServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def get(url: str, timeout: float = 90) -> tuple[int, dict]:
    """GET a JSON page, waiting while gunicorn's workers are still booting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except (TimeoutError, ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def stack(tmp_path):
    pg, redis_server, s3 = PostgresServer().start(), RedisServer().start(), MotoS3Server().start()
    procs: list[subprocess.Popen] = []
    try:
        with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE annotator")
        boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket="annotator-media")
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "SERVE_MEDIA")}
        env.update({
            "DEBUG": "false", "SECRET_KEY": "stack-test-" + "s" * 50,
            "DATABASE_URL": pg.url, "CELERY_BROKER_URL": redis_server.url,
            "CACHE_URL": redis_server.url.replace("/0", "/1"),
            "AWS_STORAGE_BUCKET_NAME": "annotator-media", "AWS_S3_ENDPOINT_URL": s3.url,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "ALLOWED_HOSTS": "127.0.0.1,localhost", "ANNOTATOR_VAR_DIR": str(tmp_path / "var"),
            "SECURE_SSL_REDIRECT": "false",
        })
        done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        port = free_port()
        logs = {name: (tmp_path / f"{name}.log") for name in ("web", "worker", "beat")}
        commands = {
            "web": [str(BIN / "gunicorn"), "annotator.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            "worker": [sys.executable, "-m", "celery", "-A", "annotator", "worker", "--loglevel=INFO", "--concurrency=1", "-Q", "annotator"],
            "beat": [sys.executable, "-m", "celery", "-A", "annotator", "beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule")],
        }
        for name, cmd in commands.items():
            with logs[name].open("wb") as log:
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for_port(port, timeout=60, proc=procs[0], log=logs["web"])
        yield {"base": f"http://127.0.0.1:{port}", "env": env, "logs": logs, "redis": redis_server, "s3": s3, "pg": pg}
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for server in (s3, redis_server, pg):
            server.stop()


def manage_shell(code: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.services
def test_production_shape_serves_and_works_on_postgres_redis_and_s3(stack):
    status, body = get(stack["base"] + "/readyz")
    assert status == 200, body
    assert {name: check["ok"] for name, check in body["checks"].items()} == {"database": True, "broker": True, "storage": True}

    # Media goes to the S3 bucket through django-storages.
    name = manage_shell("from django.core.files.base import ContentFile; from django.core.files.storage import default_storage; "
                        "print(default_storage.save('probe/hello.txt', ContentFile(b'hello')))", stack["env"])
    s3 = boto3.client("s3", endpoint_url=stack["s3"].url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    assert s3.get_object(Bucket="annotator-media", Key=name)["Body"].read() == b"hello"

    # A task queued by the web tier's code runs in the separate worker process through Redis.
    task_id = manage_shell("from annotator.celery import ping; print(ping.delay().id)", stack["env"])
    deadline = time.monotonic() + 60
    while f"annotator.ping[{task_id}] succeeded" not in stack["logs"]["worker"].read_text(errors="replace"):
        assert time.monotonic() < deadline, stack["logs"]["worker"].read_text()[-3000:]
        time.sleep(0.3)
    assert "beat: Starting" in stack["logs"]["beat"].read_text(errors="replace")

    # The cache is Redis, shared by every process.
    manage_shell("from django.core.cache import cache; cache.set('probe', 'shared', 60)", stack["env"])
    assert manage_shell("from django.core.cache import cache; print(cache.get('probe'))", stack["env"]) == "shared"

    # The admin answers on PostgreSQL.
    with urllib.request.urlopen(stack["base"] + "/admin/login/", timeout=10) as response:
        assert response.status == 200 and b"Annotator" in response.read()


@pytest.mark.services
def test_readiness_names_the_service_that_is_down(stack):
    stack["redis"].stop()
    status, body = get(stack["base"] + "/readyz")
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["ok"] is False and body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True
    # Liveness does not depend on the services.
    with urllib.request.urlopen(stack["base"] + "/healthz", timeout=10) as response:
        assert response.status == 200
