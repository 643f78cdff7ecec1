"""The permission matrix: every endpoint x anonymous / another project's researcher / plain
staff / researcher / requester / owner / superuser. Other projects answer 404, never 403."""
from __future__ import annotations

import io

import pytest

from datasets.models import Export
from datasets.exports.service import export_create
from tests.exports.builders import jpeg_bytes

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "other_researcher", "staff", "researcher", "requester", "owner", "superuser"]
READ = {"anonymous": 401, "other_researcher": 404, "staff": 404, "researcher": 200, "requester": 200,
        "owner": 200, "superuser": 200}
EXPORT = {**READ, "researcher": 201, "requester": 201, "owner": 201, "superuser": 201}
UPLOAD = {**EXPORT, "researcher": 403}
CANCEL = dict(READ)


def read_urls(w):
    p, n, i = w.project.pk, w.export.number, w.image.pk
    base = f"/api/v1/projects/{p}/"
    return [base, base + "statistics/", base + "categories/", base + "images/", base + f"images/{i}/",
            base + f"images/{i}/file", base + "annotations/", base + "exports/", base + f"exports/{n}/",
            base + f"exports/{n}/manifest/", base + f"exports/{n}/files/manifest.json"]


@pytest.mark.parametrize("who", ROLES)
def test_read_endpoints(world, who):
    client = world.client(who)
    for url in read_urls(world):
        response = client.get(url)
        assert response.status_code == READ[who], (url, response.status_code)
        if response.status_code >= 400:
            assert response.json()["error"]["status"] == READ[who]


@pytest.mark.parametrize("who", ROLES)
def test_project_list_shows_only_shared_projects(world, who):
    response = world.client(who).get("/api/v1/projects/")
    if who == "anonymous":
        assert response.status_code == 401
        return
    names = sorted(p["name"] for p in response.json()["results"])
    expected = {"other_researcher": ["Other"], "staff": [], "superuser": ["Main", "Other"]}.get(who, ["Main"])
    assert names == expected
    roles = {p["name"]: p["role"] for p in response.json()["results"]}
    if who in ("researcher", "requester", "owner"):
        assert roles == {"Main": who}


@pytest.mark.parametrize("who", ROLES)
def test_create_export(world, who):
    response = world.client(who).post(f"/api/v1/projects/{world.project.pk}/exports/",
                                      {"formats": ["coco"], "seed": 3}, format="json")
    assert response.status_code == EXPORT[who], response.content
    if response.status_code == 201:
        assert response.json()["number"] == 2 and response.json()["status"] == "pending"


@pytest.mark.parametrize("who", ROLES)
def test_cancel_export(world, who):
    pending = export_create(project=world.project, queue=False)
    response = world.client(who).post(f"/api/v1/projects/{world.project.pk}/exports/{pending.number}/cancel/")
    assert response.status_code == CANCEL[who]
    pending.refresh_from_db()
    assert pending.status == (Export.Status.CANCELLED if CANCEL[who] == 200 else Export.Status.PENDING)


@pytest.mark.parametrize("who", ROLES)
def test_upload_images(world, who):
    data = jpeg_bytes(32, 24, seed=hash(who) % 1000)
    upload = io.BytesIO(data)
    upload.name = f"{who}.jpg"
    response = world.client(who).post(f"/api/v1/projects/{world.project.pk}/images/", {"files": [upload]},
                                      format="multipart")
    assert response.status_code == UPLOAD[who], response.content
    if response.status_code == 201:
        assert response.json()["imported"] == 1


@pytest.mark.parametrize("who", ["researcher", "owner", "superuser"])
def test_objects_of_another_project_are_not_found_through_this_one(world, who):
    client = world.client(who)
    p = world.project.pk
    assert client.get(f"/api/v1/projects/{p}/images/{world.other_image.pk}/").status_code == 404
    assert client.get(f"/api/v1/projects/{p}/images/{world.other_image.pk}/file").status_code == 404
    assert client.get(f"/api/v1/projects/{p}/exports/99/").status_code == 404
    assert client.get(f"/api/v1/projects/{p}/exports/{world.export.number}/files/../../secret").status_code == 404
    ids = [a["image"] for a in client.get(f"/api/v1/projects/{p}/annotations/?image={world.other_image.pk}").json()["results"]]
    assert ids == []
    assert client.get("/api/v1/projects/999999/").status_code == 404
