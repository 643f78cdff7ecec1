"""Every endpoint family against every role: anonymous, a marketplace worker, another project's
researcher, staff without permissions, researcher, requester, owner and superuser. An id from
someone else's project never answers with its data: the answers are 401/404 (the API), a sign-in
redirect or 403 (the admin), 404 or a refusal (the tools), and none of them carries the data.

The marketplace's worker site (another worker's assignment cannot be opened, returned or
submitted) is covered in tests/marketplace/test_security.py."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from crowd.marketplace.models import WorkerProfile
from datasets.models import Category, Export, Image, ImageLabel, Membership
from frontend.models import TaskAnswer
from frontend.services import task_item_create, task_path
from tests.api.conftest import make_world

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "worker", "other_researcher", "staff", "researcher", "requester", "owner", "superuser"]
MEMBERS = {"researcher", "requester", "owner", "superuser"}


@pytest.fixture
def world(db, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"anon": "100000/min", "user": "100000/min"}}
    built = make_world()
    worker = get_user_model().objects.create_user("market-worker", password="Worker-pass-5512")
    WorkerProfile.objects.create(user=worker)
    built.users["worker"] = worker
    return built


def telltales(world) -> list[str]:
    """Strings that only the Main project's data contains."""
    image = world.image
    return [image.sha256, image.file.name, world.export.storage_prefix,
            *(f["sha256"] for f in world.export.files[:3])]


def leaked(world, body: bytes) -> list[str]:
    text = body.decode("utf-8", "replace")
    return [t for t in telltales(world) if t and t in text]


def api_urls(world) -> list[str]:
    p, n, i = world.project.pk, world.export.number, world.image.pk
    base = f"/api/v1/projects/{p}/"
    return [base, base + "statistics/", base + "categories/", base + "images/", base + f"images/{i}/",
            base + f"images/{i}/file", base + "annotations/", base + f"annotations/?image={i}", base + "exports/",
            base + f"exports/{n}/", base + f"exports/{n}/manifest/", base + f"exports/{n}/files/manifest.json"]


def expected_read(who: str) -> int:
    return 401 if who == "anonymous" else 200 if who in MEMBERS else 404


@pytest.mark.parametrize("who", ROLES)
def test_api_reads_answer_only_members_and_never_leak(world, who):
    client = world.client(who)
    for url in api_urls(world):
        response = client.get(url)
        assert response.status_code == expected_read(who), (who, url, response.status_code)
        if response.status_code != 200:
            assert response.json()["error"]["status"] == response.status_code
            assert leaked(world, response.content) == [], (who, url)
    if who in MEMBERS:  # the telltales are real: members do see them
        assert world.image.sha256 in client.get(f"/api/v1/projects/{world.project.pk}/images/{world.image.pk}/").content.decode()


@pytest.mark.parametrize("who", ["worker", "other_researcher", "staff"])
def test_api_writes_by_outsiders_change_nothing(world, who):
    client = world.client(who)
    p = world.project.pk
    exports, images = Export.objects.count(), Image.objects.count()
    assert client.post(f"/api/v1/projects/{p}/exports/", {"formats": ["coco"]}, format="json").status_code == 404
    assert client.post(f"/api/v1/projects/{p}/exports/{world.export.number}/cancel/").status_code == 404
    assert client.post(f"/api/v1/projects/{p}/images/", {}, format="multipart").status_code == 404
    assert client.delete(f"/api/v1/projects/{p}/images/{world.image.pk}/").status_code in (404, 405)
    assert (Export.objects.count(), Image.objects.count()) == (exports, images)


def test_api_tokens_carry_the_same_rights_as_sessions(world):
    outsider, owner = world.token_client("other_researcher"), world.token_client("owner")
    for url in api_urls(world):
        assert outsider.get(url).status_code == 404, url
        assert owner.get(url).status_code == 200, url


def test_ids_of_another_project_do_not_answer_through_ones_own(world):
    """A researcher of Other puts Main's ids into Other's URLs: nothing of Main comes back."""
    client = world.client("other_researcher")
    o, i, n = world.other_project.pk, world.image.pk, world.export.number
    for url in [f"/api/v1/projects/{o}/images/{i}/", f"/api/v1/projects/{o}/images/{i}/file",
                f"/api/v1/projects/{o}/exports/{n}/", f"/api/v1/projects/{o}/exports/{n}/files/manifest.json"]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert leaked(world, response.content) == []
    listed = client.get(f"/api/v1/projects/{o}/annotations/?image={i}").json()["results"]
    assert listed == []
    body = client.get(f"/api/v1/projects/{o}/categories/").json()
    names = [c["name"] for c in (body["results"] if isinstance(body, dict) else body)]
    main_only = set(Category.objects.filter(project=world.project).values_list("name", flat=True)) - set(
        Category.objects.filter(project=world.other_project).values_list("name", flat=True))
    assert not main_only & set(names)


# --- The admin ---------------------------------------------------------------------------------------

def admin_urls(world) -> list[str]:
    p, i = world.project.pk, world.image.pk
    return [
        reverse("admin:index"), reverse("admin:datasets_project_changelist"),
        reverse("admin:datasets_project_change", args=[p]), reverse("admin:datasets_image_changelist"),
        reverse("admin:datasets_image_change", args=[i]), reverse("admin:datasets_image_thumbnail", args=[i]),
        reverse("admin:datasets_project_import_images", args=[p]), reverse("admin:datasets_export_changelist"),
        reverse("admin:frontend_taskanswer_changelist"), reverse("admin:auth_user_changelist"),
    ]


@pytest.mark.parametrize("who", ["anonymous", "worker", "other_researcher", "researcher", "requester", "owner"])
def test_the_admin_is_closed_to_everyone_but_staff(world, who):
    """Project roles are for the REST API; the admin is the operators' console."""
    client = Client()
    if who != "anonymous":
        client.force_login(world.users[who])
    for url in admin_urls(world):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), (who, url)
    # Signing in there with a non-staff account does not open it either.
    user = world.users.get(who)
    if user is not None:
        user.set_password("Known-pass-9021")
        user.save()
        page = Client().post("/admin/login/", {"username": user.username, "password": "Known-pass-9021"})
        assert page.status_code == 200 and "staff account" in page.content.decode()


def test_staff_without_permissions_reach_nothing_in_the_admin(world):
    client = Client()
    client.force_login(world.users["staff"])
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200 and "have permission to view or edit anything" in index.content.decode()
    for url in admin_urls(world)[1:]:
        response = client.get(url)
        assert response.status_code == 403, (url, response.status_code)
        assert leaked(world, response.content) == [], url


def test_staff_see_what_their_permissions_allow_across_projects(world):
    """The admin is not scoped per project: a staff member given 'view image' sees every
    project's images (that is the operators' console); researchers use the API instead."""
    from django.contrib.auth.models import Permission

    staff = world.users["staff"]
    staff.user_permissions.add(Permission.objects.get(codename="view_image"))
    client = Client()
    client.force_login(staff)
    assert client.get(reverse("admin:datasets_image_change", args=[world.other_image.pk])).status_code == 200
    assert client.get(reverse("admin:datasets_project_changelist")).status_code == 403
    assert client.get(reverse("admin:datasets_project_import_images", args=[world.project.pk])).status_code == 403


def test_superuser_reaches_every_admin_page(world):
    client = Client()
    client.force_login(world.users["superuser"])
    for url in admin_urls(world):
        assert client.get(url).status_code == 200, url


def test_media_folders_are_not_listed(world):
    folder = world.image.file.name.rsplit("/", 1)[0]
    for path in ("/media/", "/media/projects/", f"/media/{folder}/"):
        assert Client().get(path).status_code == 404, path


# --- The tools -----------------------------------------------------------------------------------------

def test_task_tokens_are_signed_and_bound_to_their_task_and_tool(world):
    first = task_item_create(kind="categories", project=world.project, images=[world.image])
    second = task_item_create(kind="categories", project=world.other_project, images=[world.other_image])
    client = Client()
    labels = ImageLabel.objects.count()
    framed = "?assignmentId=A1&hitId=H1&workerId=W1&turkSubmitTo=https://example.org"
    url = task_path(task=first)
    token = url.rstrip("/").rsplit("/", 1)[-1]
    other_token = task_path(task=second).rstrip("/").rsplit("/", 1)[-1]
    forged_pk = token.replace(f"-{first.pk}:", f"-{second.pk}:")
    spliced = token.split(":")[0] + ":" + other_token.split(":", 1)[1]
    body = {"host": {"assignmentId": "A1", "hitId": "H1", "workerId": "W1"},
            "answer": {"schema": "annotator.answer/categories", "version": 1,
                       "images": [{"image": world.other_image.pk, "present": []}]}}
    for bad in (f"/tasks/categories/{forged_pk}/", f"/tasks/categories/{spliced}/", f"/tasks/spotting/{token}/",
                "/tasks/categories/categories-1/", f"/tasks/nosuchtool/{token}/"):
        assert client.get(bad + framed).status_code == 404, bad
        answer = client.post(bad + "answer", data=json.dumps(body), content_type="application/json")
        assert answer.status_code == 404, bad
    # The first task's own token cannot answer for the second task's image.
    refused = client.post(url + "answer", data=json.dumps(body), content_type="application/json")
    assert refused.status_code == 400 and f"Image {world.other_image.pk} is not part of this task" in refused.json()["error"]
    assert TaskAnswer.objects.count() == 0 and ImageLabel.objects.count() == labels


def test_a_task_cannot_be_made_or_answered_with_another_projects_things(world):
    from frontend.services import TaskError

    with pytest.raises(TaskError):
        task_item_create(kind="categories", project=world.project, images=[world.other_image])
    other_category = Category.objects.filter(project=world.other_project).first()
    task = task_item_create(kind="categories", project=world.project, images=[world.image])
    body = {"host": {"assignmentId": "A1", "hitId": "H1", "workerId": "W1"},
            "answer": {"schema": "annotator.answer/categories", "version": 1,
                       "images": [{"image": world.image.pk, "present": [other_category.pk]}]}}
    refused = Client().post(task_path(task=task) + "answer", data=json.dumps(body), content_type="application/json")
    assert refused.status_code == 400 and "is not a category of this project" in refused.json()["error"]
    assert TaskAnswer.objects.count() == 0


def test_a_direct_task_page_needs_a_signed_in_user(world):
    task = task_item_create(kind="categories", project=world.project, images=[world.image])
    response = Client().get(task_path(task=task))
    assert response.status_code == 302 and "login" in response["Location"]
    assert Membership.objects.filter(project=world.project).exists()
