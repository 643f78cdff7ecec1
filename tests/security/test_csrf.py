"""Every form that changes something refuses a post without its CSRF token (Django's test client
with ``enforce_csrf_checks=True``, signed in where the form needs it), and nothing changes; the
same post with the token goes through. Posts that cannot carry a token by design are covered
elsewhere: the framed task pages' answers carry no cookie and count only when the provider
confirms them (tests/crowd/test_sync.py), and /mturk/externalSubmit counts only with the
worker's own SameSite=Lax session (tests/marketplace/test_security.py)."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from crowd.marketplace.models import WorkerProfile
from datasets.models import Export, Project
from datasets.exports.service import export_create
from frontend.models import TaskAnswer
from frontend.services import task_item_create, task_path

pytestmark = pytest.mark.django_db
PASSWORD = "Sturdy-pass-9271"


def refused(client: Client, url: str, data: dict | None = None, **extra) -> None:
    response = client.post(url, data or {}, **extra)
    assert response.status_code == 403, (url, response.status_code)
    assert b"CSRF" in response.content, url


def with_token(client: Client, page: str) -> str:
    client.get(page)
    return client.cookies["csrftoken"].value


@pytest.fixture
def people(db):
    User = get_user_model()
    root = User.objects.create_superuser("root", password=PASSWORD)
    plain = User.objects.create_user("plain", password=PASSWORD)
    worker_user = User.objects.create_user("worker", password=PASSWORD)
    WorkerProfile.objects.create(user=worker_user)
    return root, plain, worker_user


def csrf_client(user=None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def test_sign_in_forms(people):
    for url in ("/admin/login/", "/market/login/"):
        client = csrf_client()
        refused(client, url, {"username": "root", "password": PASSWORD})
        assert "_auth_user_id" not in client.session
        token = with_token(client, url)
        assert client.post(url, {"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token}).status_code == 302


def test_sign_out_and_marketplace_forms(people, settings):
    root, plain, worker_user = people
    settings.MARKETPLACE_OPEN_SIGNUP = True
    refused(csrf_client(), "/market/signup/", {"username": "walkin", "country": "DE", "password1": PASSWORD,
                                              "password2": PASSWORD})
    assert not get_user_model().objects.filter(username="walkin").exists()

    client = csrf_client(plain)
    refused(client, "/market/become-worker/")
    assert not WorkerProfile.objects.filter(user=plain).exists()
    token = with_token(client, "/market/")
    assert client.post("/market/become-worker/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert WorkerProfile.objects.filter(user=plain).exists()

    client = csrf_client(worker_user)
    refused(client, "/market/qualifications/", {"qualification_type_id": "X"})
    refused(client, "/market/join/SOMECODE/")
    refused(client, "/market/hits/NOSUCHHIT/accept/")
    refused(client, "/market/groups/NOSUCHTYPE/accept/")
    refused(client, "/market/work/NOSUCHASSIGNMENT/return/")
    refused(client, "/market/logout/")
    assert client.get("/market/").status_code == 200  # still signed in


def test_admin_forms_and_actions(people):
    root, _, _ = people
    client = csrf_client(root)
    project = Project.objects.create(name="Kept", owner=root)
    refused(client, "/admin/datasets/project/add/", {"name": "Injected", "owner": root.pk, "status": "draft"})
    refused(client, f"/admin/datasets/project/{project.pk}/change/", {"name": "Renamed", "owner": root.pk})
    refused(client, f"/admin/datasets/project/{project.pk}/delete/", {"post": "yes"})
    refused(client, "/admin/datasets/project/", {"action": "add_coco_categories", "_selected_action": [project.pk]})
    refused(client, f"/admin/datasets/project/{project.pk}/import-images/", {"urls": "https://example.org/a.jpg"})
    refused(client, f"/admin/datasets/project/{project.pk}/import-categories/", {})
    refused(client, "/admin/auth/user/add/", {"username": "intruder", "password1": PASSWORD, "password2": PASSWORD})
    refused(client, "/admin/logout/")
    assert list(Project.objects.values_list("name", flat=True)) == ["Kept"]
    assert project.categories.count() == 0
    assert not get_user_model().objects.filter(username="intruder").exists()


def test_api_with_a_session_needs_the_token_and_with_an_api_token_does_not(people):
    from datasets.services.tokens import api_token_create

    root, _, _ = people
    project = Project.objects.create(name="Api", owner=root)
    pending = export_create(project=project, queue=False)
    client = csrf_client(root)
    url = f"/api/v1/projects/{project.pk}/exports/{pending.number}/cancel/"
    response = client.post(url)
    assert response.status_code == 403 and "CSRF" in response.json()["error"]["message"]
    pending.refresh_from_db()
    assert pending.status == Export.Status.PENDING
    # A script with an API token sends no cookie, so there is nothing to forge.
    _, raw = api_token_create(user=root, name="script")
    scripted = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {raw}")
    assert scripted.post(url).status_code == 200


def test_a_signed_in_users_own_answer_needs_the_token(people):
    from tests.frontend.conftest import make_image

    root, _, _ = people
    project = Project.objects.create(name="Tools", owner=root)
    image = make_image(project)
    task = task_item_create(kind="categories", project=project, images=[image])
    body = json.dumps({"host": {}, "answer": {"schema": "annotator.answer/categories", "version": 1,
                                              "images": [{"image": image.pk, "present": []}]}})
    client = csrf_client(root)
    response = client.post(task_path(task=task) + "answer", data=body, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    assert TaskAnswer.objects.count() == 0
    token = with_token(client, task_path(task=task))
    ok = client.post(task_path(task=task) + "answer", data=body, content_type="application/json",
                     HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 201 and TaskAnswer.objects.count() == 1


def test_session_and_csrf_cookies_are_not_sent_on_cross_site_posts(people, settings):
    assert settings.SESSION_COOKIE_SAMESITE == "Lax" and settings.CSRF_COOKIE_SAMESITE == "Lax"
    client = Client()
    token = with_token(client, "/market/login/")
    response = client.post("/market/login/", {"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token})
    cookie = response.cookies["sessionid"]
    assert cookie["samesite"] == "Lax" and cookie["httponly"]
