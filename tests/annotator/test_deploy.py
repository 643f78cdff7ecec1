"""Configuration from the environment, the deploy checks, and docker-compose.yml."""
from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The compose specification's schema as check-jsonschema ships it: no download at test time.
COMPOSE_SCHEMA = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"


def run_manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    test_only = ("DATABASE_URL", "CELERY_", "AWS_", "SECURE_", "SESSION_", "CSRF_", "DJANGO_ALLOW_ASYNC_UNSAFE",
                 "ALLOWED_HOSTS", "SERVE_MEDIA", "DEBUG", "SECRET_KEY", "PUBLIC_BASE_URL")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(test_only)}
    clean.update({"ANNOTATOR_VAR_DIR": str(tmp_path / "var"), **env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def print_settings(expr: str, *, env: dict[str, str], tmp_path: Path) -> str:
    done = run_manage("shell", "--no-imports", "-c", f"from django.conf import settings as s; print({expr})", env=env, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_deploy_check_is_clean_with_debug_off(tmp_path):
    done = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env={"DEBUG": "false", "SECRET_KEY": "k" * 20 + "-production-secret-0123456789-abcdefghijklmnop",
             "ALLOWED_HOSTS": "annotator.example.org"},
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_debug_off_without_secret_key_refuses_to_start_with_a_clear_message(tmp_path):
    done = run_manage("check", env={"DEBUG": "false", "SECRET_KEY": ""}, tmp_path=tmp_path)
    assert done.returncode != 0
    assert "SECRET_KEY is not set" in done.stderr


def test_embedded_defaults_need_nothing_installed(tmp_path):
    env = {"DEBUG": "true", "SECRET_KEY": ""}
    out = print_settings(
        "s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.STORAGES['default']['BACKEND'], s.PUBLIC_BASE_URL",
        env=env, tmp_path=tmp_path,
    )
    assert out == "django.db.backends.sqlite3 filesystem:// django.core.files.storage.FileSystemStorage http://127.0.0.1:8000"
    # In DEBUG a per-installation secret key is made once and kept.
    key_file = tmp_path / "var" / "secret_key"
    assert key_file.exists() and len(key_file.read_text()) >= 50


def test_production_switches_by_variables(tmp_path):
    env = {
        "DEBUG": "false", "SECRET_KEY": "x" * 60,
        "DATABASE_URL": "postgres://u:p@db.internal:5433/annotator",
        "CELERY_BROKER_URL": "redis://cache.internal:6379/1",
        "AWS_STORAGE_BUCKET_NAME": "media-bucket", "AWS_S3_ENDPOINT_URL": "http://s3.internal:9000",
        "PUBLIC_BASE_URL": "https://annotator.example.org/", "ALLOWED_HOSTS": "annotator.example.org",
    }
    out = print_settings(
        "s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST'], s.DATABASES['default']['PORT'], "
        "s.CELERY_BROKER_URL, s.STORAGES['default']['BACKEND'], s.STORAGES['default']['OPTIONS']['bucket_name'], "
        "s.STORAGES['default']['OPTIONS']['endpoint_url'], s.PUBLIC_BASE_URL, s.ALLOWED_HOSTS",
        env=env, tmp_path=tmp_path,
    )
    assert out == (
        "django.db.backends.postgresql db.internal 5433 redis://cache.internal:6379/1 "
        "storages.backends.s3.S3Storage media-bucket http://s3.internal:9000 "
        "https://annotator.example.org ['annotator.example.org']"
    )


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode():
    from django.db import connection

    assert connection.vendor == "sqlite"  # the default; this module is not in the PostgreSQL pass
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validate(load_compose(), schema)


def test_compose_validator_catches_a_broken_file():
    """The schema check is real: a misspelt key is reported."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken = load_compose()
    broken["services"]["web"]["helthcheck"] = broken["services"]["web"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError, match="helthcheck"):
        jsonschema.validate(broken, schema)


def test_compose_runs_the_production_shape_with_the_same_variables():
    compose = load_compose()
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "web", "worker", "beat"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    app_env = services["web"]["environment"]
    for name in ("web", "worker", "beat"):
        assert services[name]["environment"] == app_env
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "appdata:/data" in services[name]["volumes"]
    for variable in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "SECRET_KEY", "ALLOWED_HOSTS", "PUBLIC_BASE_URL",
                     "AWS_STORAGE_BUCKET_NAME", "AWS_S3_ENDPOINT_URL"):
        assert variable in app_env
    assert "gunicorn annotator.wsgi:application" in services["web"]["command"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "annotator", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "annotator", "beat"]
    assert {"pgdata", "redisdata", "appdata"} <= set(compose["volumes"])
