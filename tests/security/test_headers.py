"""Security headers on every kind of page, and the framing policy of each."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from frontend.services import task_item_create, task_path

pytestmark = pytest.mark.django_db

COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def assert_common(response, url):
    for name, value in COMMON.items():
        if url == "/api/docs/" and name == "Cross-Origin-Opener-Policy":
            # drf-spectacular's Swagger UI opts out on purpose (its OAuth2 sign-in popup).
            assert response.get(name) == "unsafe-none"
            continue
        assert response.get(name) == value, (url, name, response.get(name))
    policy = response.get("Permissions-Policy", "")
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"):
        assert feature in policy, (url, policy)
    assert "object-src 'none'" in response.get("Content-Security-Policy", "") or \
        response["Content-Security-Policy"].startswith("default-src 'none'"), url


def test_every_kind_of_page_sends_the_security_headers(project, point, images):
    staff = get_user_model().objects.create_superuser("root", password="Root-pass-3318")
    signed_in = Client()
    signed_in.force_login(staff)
    task = task_item_create(kind="segmentation", project=project, point=point)
    anonymous = Client()
    pages = [
        (anonymous, "/", 200), (anonymous, "/healthz", 200), (anonymous, "/admin/login/", 200),
        (anonymous, "/admin/", 302), (signed_in, "/admin/", 200), (signed_in, "/admin/datasets/project/", 200),
        (anonymous, "/market/login/", 200), (anonymous, "/market/", 302), (anonymous, "/api/v1/projects/", 401),
        (signed_in, "/api/v1/projects/", 200), (signed_in, "/api/docs/", 200), (anonymous, "/no/such/page", 404),
        (anonymous, task_path(task=task) + "?assignmentId=A&hitId=H&workerId=W&turkSubmitTo=https://x", 200),
        (anonymous, images[0].file.url, 200),
    ]
    for client, url, status in pages:
        response = client.get(url)
        assert response.status_code == status, (url, response.status_code)
        assert_common(response, url)
        csp = response["Content-Security-Policy"]
        if url.startswith("/tasks/"):
            # Framed by the marketplace origins only, and scripts only from this site.
            assert "frame-ancestors 'self'" in csp and "script-src 'self'" in csp
            assert "X-Frame-Options" not in response
        elif url.startswith("/media/"):
            # An uploaded file opened directly is a sandboxed document that loads nothing.
            assert csp == "default-src 'none'; img-src 'self'; sandbox"
        else:
            assert response["X-Frame-Options"] == "DENY", url
            assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp, (url, csp)


def test_pages_a_marketplace_frame_shows_may_be_framed_by_this_site_only(client):
    response = client.post("/mturk/externalSubmit", {"assignmentId": "A1", "answer": "x"})
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in response["Content-Security-Policy"]
    assert_common(response, "/mturk/externalSubmit")


def test_hsts_and_secure_cookies_in_production_settings():
    """DEBUG off (the test settings): cookies are marked Secure unless the operator says otherwise,
    and HSTS is sent over HTTPS. ``check --deploy`` is run in tests/annotator/test_deploy.py."""
    from django.conf import settings

    assert settings.SECURE_HSTS_SECONDS >= 31_536_000 and settings.SECURE_HSTS_INCLUDE_SUBDOMAINS
    assert settings.SESSION_COOKIE_HTTPONLY and settings.SESSION_COOKIE_SAMESITE == "Lax"
    response = Client().get("/healthz", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
