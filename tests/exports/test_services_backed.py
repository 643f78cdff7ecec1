"""Exports with real services: a Celery worker process on Redis building an export queued by the
API, and S3 (moto's server) through django-storages as the storage, downloads included."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from datasets.exports.service import export_build, export_create, export_storage_name
from datasets.models import Export
from tests.exports.builders import build_project, share

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


@pytest.mark.django_db(transaction=True)
def test_an_export_queued_through_the_api_is_built_by_a_real_worker(celery_worker, settings):
    built = build_project(n_images=10)
    researcher = share(built.project, "researcher", "researcher-celery")
    client = APIClient()
    client.force_login(researcher)
    created = client.post(f"/api/v1/projects/{built.project.pk}/exports/", {"formats": ["coco", "shards"]},
                          format="json")
    assert created.status_code == 201, created.content
    url = f"/api/v1/projects/{built.project.pk}/exports/{created.json()['number']}/"
    statuses = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        body = client.get(url).json()
        statuses.append(body["status"])
        if body["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert body["status"] == "done", (body, celery_worker.output()[-3000:])
    assert "datasets.export_build" in celery_worker.output()
    assert body["progress"]["percent"] == 100.0 and body["files"]
    manifest = client.get(body["manifest_url"]).json()
    assert sum(manifest["splits"][s]["images"] for s in manifest["splits"]) == 10




@pytest.mark.django_db
def test_exports_are_written_to_s3_and_downloaded_by_range(s3_storage):
    s3, bucket = s3_storage
    assert type(default_storage._setup() or default_storage._wrapped).__name__ == "S3Storage"
    built = build_project(n_images=6)
    export = export_build(export_id=export_create(project=built.project, queue=False, min_shards=2).pk)
    assert export.status == Export.Status.DONE, export.error
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    for entry in export.files:
        key = export_storage_name(export=export, name=entry["name"])
        assert key in keys
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] and len(body) == entry["size"]
    client = APIClient()
    client.force_login(built.owner)
    tar = next(f for f in export.files if f["name"].endswith(".tar"))
    url = f"/api/v1/projects/{built.project.pk}/exports/{export.number}/files/{tar['name']}"
    full = b"".join(client.get(url).streaming_content)
    assert hashlib.sha256(full).hexdigest() == tar["sha256"]
    part = client.get(url, HTTP_RANGE="bytes=1000-2047")
    assert part.status_code == 206 and b"".join(part.streaming_content) == full[1000:2048]
    manifest = client.get(f"/api/v1/projects/{built.project.pk}/exports/{export.number}/manifest/").json()
    assert manifest["files"] == [f for f in export.files if f["name"] != "manifest.json"]
    assert json.loads(s3.get_object(Bucket=bucket, Key=export_storage_name(export=export, name="manifest.json"))
                      ["Body"].read()) == manifest
