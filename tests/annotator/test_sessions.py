"""Sessions read from Redis first, kept in the database, and working on while Redis is stopped."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from annotator.sessions import SessionStore
from tests.services import RedisServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_sessions(settings):
    server = RedisServer().start()
    settings.CACHES = {"default": {"BACKEND": "annotator.cache.RedisCache", "LOCATION": server.url}}
    settings.SESSION_ENGINE = "annotator.sessions"
    settings.SESSION_CACHE_SECONDS = 300
    yield server
    caches["default"].close()
    del caches["default"]
    server.stop()


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("ops", password="pw-sessions-1", is_staff=True, is_superuser=True)


def test_settings_use_it_for_redis_caches_only(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.SESSION_ENGINE)")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "annotator.settings", "ANNOTATOR_VAR_DIR": str(tmp_path)}
    for url, engine in [("redis://127.0.0.1:6379/1", "annotator.sessions"),
                        ("locmemcache://", "django.contrib.sessions.backends.db")]:
        out = subprocess.run([sys.executable, "-c", code], env={**env, "CACHE_URL": url}, capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == engine


def test_a_signed_in_page_reads_the_session_from_redis_not_the_database(redis_sessions, staff):
    client = Client()
    client.force_login(staff)
    key = client.cookies["sessionid"].value
    assert Session.objects.filter(session_key=key).exists()  # kept in the database too
    assert client.get("/admin/").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/admin/").status_code == 200
    assert not any("django_session" in q["sql"] for q in queries.captured_queries)
    cache = caches["default"]
    ttl = cache._cache.get_client().ttl(cache.make_key(SessionStore.cache_key_prefix + key))
    assert 0 < ttl <= 300  # the cached copy is short-lived, whatever the session's age


def test_with_redis_stopped_workers_stay_signed_in_sign_in_and_sign_out(redis_sessions, staff):
    signed_in = Client()
    signed_in.force_login(staff)
    redis_sessions.stop()

    # An existing session is read from the database.
    assert signed_in.get("/admin/").status_code == 200
    # A new sign-in draws a key, saves and is then recognised: the database alone.
    fresh = Client()
    response = fresh.post("/admin/login/?next=/admin/", {"username": "ops", "password": "pw-sessions-1"})
    assert response.status_code == 302, response.content[:300]
    assert fresh.get("/admin/").status_code == 200
    # Signing out deletes the session from the database: it is gone.
    key = fresh.cookies["sessionid"].value
    assert fresh.post("/admin/logout/").status_code == 200
    assert not Session.objects.filter(session_key=key).exists()
    assert fresh.get("/admin/").status_code == 302


def test_a_session_deleted_in_the_database_is_not_revived_once_redis_is_back(redis_sessions, staff):
    client = Client()
    client.force_login(staff)
    key = client.cookies["sessionid"].value
    store = SessionStore(key)
    assert store.load()["_auth_user_id"] == str(staff.pk)
    store.delete()
    assert not SessionStore(key).exists(key)
    assert SessionStore(key).load() == {}
