"""The 503 + Retry-After answer of annotator.middleware, for each shape of client, and what it
must not hide. The restarts themselves are in test_restarts.py; here the failures are raised
where the real ones come from (the view's service, the session save) to check every path."""
from __future__ import annotations

import json

import kombu.exceptions
import pytest
import redis.exceptions
from django.db import InterfaceError, OperationalError
from django.test import Client

from frontend import services as tool_services
from frontend.services import task_item_create, task_path
from tests.frontend.conftest import categories, images, project  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def post_answer(client: Client, task) -> object:
    return client.post(task_path(task=task) + "answer", content_type="application/json", data=json.dumps({
        "host": {"assignmentId": "A1", "workerId": "W1", "hitId": "H1"},
        "answer": {"schema": "annotator.answer/categories", "version": 1, "images": []}}))


@pytest.mark.parametrize("error, service", [
    (OperationalError("server closed the connection unexpectedly"), "database"),
    (InterfaceError("connection already closed"), "database"),
    (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), "cache"),
    (kombu.exceptions.OperationalError("[Errno 111] Connection refused"), "task queue"),
])
def test_a_tool_answer_during_an_outage_gets_a_retryable_json_503(monkeypatch, project, images, error, service):
    task = task_item_create(kind="categories", project=project, images=images[:1])

    def down(**kwargs):
        raise error

    monkeypatch.setattr(tool_services, "answer_submit", down)
    response = post_answer(Client(raise_request_exception=False), task)
    assert response.status_code == 503
    assert response["Retry-After"] == "5" and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["ok"] is False and body["retryable"] is True and body["retry_after"] == 5
    assert f"could not reach its {service}" in body["error"]


def test_an_error_after_the_view_is_a_503_too(settings):
    """The session is saved in SessionMiddleware's response phase, after the view: Django's own
    wrapper has turned that error into a 500 when it reaches us, and the 500 is replaced."""
    from django.core.handlers.exception import convert_exception_to_response
    from django.test import RequestFactory

    from annotator.middleware import ServiceUnavailableMiddleware

    settings.DEBUG_PROPAGATE_EXCEPTIONS = False

    def session_save_fails(request):
        raise OperationalError("the database system is shutting down")

    def a_bug(request):
        raise KeyError("not an outage")

    request = RequestFactory().post("/tasks/categories/x/answer", content_type="application/json", data="{}")
    response = ServiceUnavailableMiddleware(convert_exception_to_response(session_save_fails))(request)
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "could not reach its database" in json.loads(response.content)["error"]
    response = ServiceUnavailableMiddleware(convert_exception_to_response(a_bug))(RequestFactory().get("/"))
    assert response.status_code == 500


def test_the_mturk_api_shape():
    from django.test import RequestFactory

    from annotator.middleware import unavailable_response

    response = unavailable_response(RequestFactory().post("/mturk-api/"), OperationalError("x"))
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert json.loads(response.content)["__type"] == "ServiceUnavailable"


def test_a_worker_page_during_an_outage_is_a_short_html_page():
    from annotator.middleware import unavailable_response
    from django.test import RequestFactory

    response = unavailable_response(RequestFactory().post("/mturk/externalSubmit"), OperationalError("x"))
    assert response.status_code == 503 and response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "could not reach its database" in text and "submit it again" in text and "Traceback" not in text


def test_other_errors_are_not_disguised_as_outages(monkeypatch, project, images):
    task = task_item_create(kind="categories", project=project, images=images[:1])

    def bug(**kwargs):
        raise ValueError("a bug, not an outage")

    monkeypatch.setattr(tool_services, "answer_submit", bug)
    response = post_answer(Client(raise_request_exception=False), task)
    assert response.status_code == 500
