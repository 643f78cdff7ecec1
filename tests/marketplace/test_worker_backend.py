"""The sign-in backend that loads a worker's profile with the user (crowd.marketplace.auth)."""
from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY, authenticate, get_user_model
from django.contrib.auth.hashers import make_password
from django.test import Client

from crowd.marketplace import services
from crowd.marketplace.auth import WorkerModelBackend

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def worker():
    return services.worker_sign_up(username="backend-worker", password="Sturdy-pass-9271", email="",
                                   invite_code="")


def test_the_signed_in_worker_comes_with_their_profile_in_one_query(worker, django_assert_num_queries):
    with django_assert_num_queries(1):
        user = WorkerModelBackend().get_user(worker.user_id)
        assert user.worker_profile.worker_id == worker.worker_id
    plain = get_user_model().objects.create_user("not-a-worker", password="x")
    with django_assert_num_queries(1):
        user = WorkerModelBackend().get_user(plain.pk)
        with pytest.raises(get_user_model().worker_profile.RelatedObjectDoesNotExist):
            user.worker_profile
    plain.is_active = False
    plain.save()
    assert WorkerModelBackend().get_user(plain.pk) is None


def test_signing_in_uses_it_and_a_wrong_password_is_checked_once(worker, monkeypatch):
    from django.contrib.auth import backends

    user = authenticate(username="backend-worker", password="Sturdy-pass-9271")
    assert user.backend == "crowd.marketplace.auth.WorkerModelBackend"
    calls = []
    real = backends.ModelBackend.authenticate
    monkeypatch.setattr(backends.ModelBackend, "authenticate",
                        lambda self, *a, **kw: calls.append(type(self).__name__) or real(self, *a, **kw))
    assert authenticate(username="backend-worker", password="wrong") is None
    assert authenticate(username="nobody", password="wrong") is None
    assert calls == ["WorkerModelBackend", "WorkerModelBackend"]  # never ModelBackend after it


def test_sessions_signed_in_with_django_s_backend_stay_valid(worker):
    client = Client()
    client.force_login(worker.user, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/market/")
    assert page.status_code == 200 and worker.worker_id in page.content.decode()
    assert client.session[SESSION_KEY] == str(worker.user_id)


def test_worker_pages_show_the_worker_id_and_refuse_users_who_are_not_workers(worker):
    client = Client()
    client.force_login(worker.user)
    assert worker.worker_id in client.get("/market/").content.decode()
    plain = get_user_model().objects.create(username="plain", password=make_password("x"))
    other = Client()
    other.force_login(plain)
    assert other.get("/market/").status_code == 403
