"""What the endpoints return: statistics, filtered and cursor-paginated annotations, export
progress, manifests, downloads with Range / If-Range / ETag, tokens, errors and throttling."""
from __future__ import annotations

import hashlib
import json

import pytest
from django.core.cache import cache
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from datasets.exports.service import export_create, export_storage_name
from datasets.models import ApiToken, Export, Polygon

pytestmark = pytest.mark.django_db


def test_statistics_count_what_the_project_holds(world):
    data = world.client("researcher").get(f"/api/v1/projects/{world.project.pk}/statistics/").json()
    assert data["images"] == 6 and data["categories"] == 3 and data["exports"] == 1
    assert data["polygons"] == {s: Polygon.objects.filter(image__project=world.project, status=s).count()
                                for s in ("pending", "accepted", "rejected")}
    cat = next(c for c in data["per_category"] if c["id"] == 17)
    assert cat["accepted_polygons"] == Polygon.objects.filter(category__coco_id=17, category__project=world.project,
                                                              status="accepted").count()


def test_annotations_are_filtered_and_cursor_paginated(world):
    client = world.client("researcher")
    url = f"/api/v1/projects/{world.project.pk}/annotations/?status=accepted&category=17&page_size=2"
    seen = []
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 2
        seen.extend(page["results"])
        url = page["next"]
    expected = list(Polygon.objects.filter(image__project=world.project, status="accepted", category__coco_id=17)
                    .order_by("id").values_list("id", flat=True))
    assert [a["id"] for a in seen] == expected
    assert all(a["category"] == 17 and a["status"] == "accepted" for a in seen)
    confident = client.get(f"/api/v1/projects/{world.project.pk}/annotations/?min_confidence=0.9").json()["results"]
    assert confident and all(a["confidence"] >= 0.9 for a in confident)
    bad = client.get(f"/api/v1/projects/{world.project.pk}/annotations/?status=maybe")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"


def test_export_status_progress_and_files(world):
    client = world.client("researcher")
    base = f"/api/v1/projects/{world.project.pk}/exports/"
    done = client.get(base + f"{world.export.number}/").json()
    assert done["status"] == "done" and done["progress"]["percent"] == 100.0
    assert {f["name"] for f in done["files"]} == {f["name"] for f in world.export.files}
    assert done["manifest_url"].endswith(f"/exports/{world.export.number}/manifest/")
    manifest = client.get(done["manifest_url"]).json()
    assert manifest["format_version"] == 1 and "train" in manifest["splits"]
    created = client.post(base, {"formats": ["shards"], "split_ratios": {"train": 1, "val": 0, "test": 0},
                                 "filters": {"categories": [17]}, "min_shards": 2}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "pending" and body["files"] == [] and body["manifest_url"] is None
    Export.objects.filter(project=world.project, number=body["number"]).update(
        status="running", progress_done=5, progress_total=20)
    running = client.get(base + f"{body['number']}/").json()
    assert running["progress"]["percent"] == 25.0 and running["progress"]["total"] == 20
    assert client.get(base + f"{body['number']}/manifest/").status_code == 409
    assert client.get(base + f"{body['number']}/files/manifest.json").status_code == 409
    assert client.post(base + f"{world.export.number}/cancel/").status_code == 409
    invalid = client.post(base, {"split_ratios": {"train": 0.5, "val": 0.1, "test": 0.1}}, format="json")
    assert invalid.status_code == 400 and "add up to 1" in invalid.json()["error"]["message"]


def _file(world, name="manifest.json"):
    entry = world.export.file_entry(name)
    url = f"/api/v1/projects/{world.project.pk}/exports/{world.export.number}/files/{name}"
    with default_storage.open(export_storage_name(export=world.export, name=name), "rb") as f:
        return url, entry, f.read()


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_downloads_honour_range_if_range_and_etag(world):
    name = next(f["name"] for f in world.export.files if f["name"].endswith(".tar"))
    url, entry, data = _file(world, name)
    client = world.client("researcher")
    full = client.get(url)
    full_body = _body(full)
    assert full.status_code == 200 and full_body == data
    assert full["ETag"] == f'"{entry["sha256"]}"' and full["Accept-Ranges"] == "bytes"
    assert full["Content-Length"] == str(len(data))
    part = client.get(url, HTTP_RANGE="bytes=100-1099")
    assert part.status_code == 206 and _body(part) == data[100:1100]
    assert part["Content-Range"] == f"bytes 100-1099/{len(data)}"
    tail = client.get(url, HTTP_RANGE="bytes=-10")
    assert tail.status_code == 206 and _body(tail) == data[-10:]
    open_end = client.get(url, HTTP_RANGE=f"bytes={len(data) - 5}-", HTTP_IF_RANGE=f'"{entry["sha256"]}"')
    assert open_end.status_code == 206 and _body(open_end) == data[-5:]
    stale = client.get(url, HTTP_RANGE="bytes=10-", HTTP_IF_RANGE='"0000"')
    assert stale.status_code == 200 and _body(stale) == data
    beyond = client.get(url, HTTP_RANGE=f"bytes={len(data)}-")
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(data)}"
    assert client.get(url, HTTP_IF_NONE_MATCH=f'"{entry["sha256"]}"').status_code == 304
    assert hashlib.sha256(full_body).hexdigest() == entry["sha256"]
    assert client.head(url)["Content-Length"] == str(len(data))


def test_tokens_are_shown_once_stored_hashed_and_revocable(world):
    session = world.client("researcher")
    made = session.post("/api/v1/tokens/", {"name": "cluster"}, format="json")
    assert made.status_code == 201
    raw = made.json()["token"]
    row = ApiToken.objects.get(pk=made.json()["id"])
    assert row.key_hash == hashlib.sha256(raw.encode()).hexdigest() and raw not in json.dumps(
        list(ApiToken.objects.values()), default=str)
    listed = session.get("/api/v1/tokens/").json()
    assert [t["prefix"] for t in listed] == [raw[:12]] and "token" not in listed[0]
    scripted = APIClient()
    scripted.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert scripted.get(f"/api/v1/projects/{world.project.pk}/").status_code == 200
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert bearer.get("/api/v1/projects/").status_code == 200
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=None)
    assert session.delete(f"/api/v1/tokens/{row.pk}/").status_code == 204
    refused = scripted.get("/api/v1/projects/")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "authentication_failed"
    other = world.client("owner")
    assert other.delete(f"/api/v1/tokens/{row.pk}/").status_code == 404
    garbage = APIClient()
    garbage.credentials(HTTP_AUTHORIZATION="Token nope")
    assert garbage.get("/api/v1/projects/").status_code == 401


def test_tokens_made_in_the_admin_are_shown_once(world, client):
    client.force_login(world.users["superuser"])
    response = client.post("/admin/datasets/apitoken/add/", {"user": world.users["researcher"].pk,
                                                             "name": "from admin"}, follow=True)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    raw = next(m.split()[3] for m in messages if m.startswith("The token is"))
    token = ApiToken.objects.get(name="from admin")
    assert token.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert api.get(f"/api/v1/projects/{world.project.pk}/").status_code == 200


def test_errors_share_one_format(world):
    anon = APIClient().get("/api/v1/projects/")
    assert anon.status_code == 401 and anon.json() == {"error": {
        "status": 401, "code": "not_authenticated", "message": "Authentication credentials were not provided.",
        "details": {}}}
    assert anon["WWW-Authenticate"].startswith("Token")
    missing = world.client("researcher").get("/api/v1/projects/424242/statistics/").json()
    assert missing["error"]["code"] == "not_found"
    forbidden = world.client("researcher").post(f"/api/v1/projects/{world.project.pk}/images/", {}, format="multipart")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "permission_denied"


def test_throttling_answers_429_in_the_same_format(world, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "3/min", "user": "5/min"}}
    cache.clear()
    anon = APIClient()
    codes = [anon.get("/api/v1/projects/").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    client = world.client("researcher")
    codes = [client.get("/api/v1/projects/").status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    body = client.get("/api/v1/projects/").json()
    assert body["error"]["code"] == "throttled" and body["error"]["details"]["retry_after_seconds"] > 0


def test_schema_and_swagger_are_served(world):
    client = world.client("researcher")
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/v1/projects/{project_id}/exports/{number}/files/{name}" in paths
    assert client.get("/api/docs/").status_code == 200


def test_a_pending_export_queues_a_celery_task_after_commit(world, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    from datasets.exports import tasks

    monkeypatch.setattr(tasks.export_build_task, "apply_async", lambda *a, **k: sent.append((a, k)))
    with django_capture_on_commit_callbacks(execute=True):
        export = export_create(project=world.project)
    assert sent and sent[0][0][0] == (export.pk,)


def test_the_admin_lists_exports_and_cancels_them(world, client):
    client.force_login(world.users["superuser"])
    assert client.get("/admin/datasets/export/").status_code == 200
    assert client.get(f"/admin/datasets/export/{world.export.pk}/change/").status_code == 200
    pending = export_create(project=world.project, queue=False)
    response = client.post("/admin/datasets/export/", {"action": "cancel", "_selected_action": [pending.pk]},
                           follow=True)
    assert response.status_code == 200
    pending.refresh_from_db()
    assert pending.status == Export.Status.CANCELLED
    token = ApiToken.objects.create(user=world.users["owner"], name="t", prefix="ann_x", key_hash="0" * 64)
    client.post("/admin/datasets/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True)
    token.refresh_from_db()
    assert token.revoked_at is not None
