"""The requester console through Django's test client, logged in as a superuser."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from datasets.models import Category, Image, ImageImport
from tests.datasets.conftest import image_bytes, jpeg_bytes, truncated_jpeg
from tests.factories import CategoryFactory, ImageFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = UserFactory(username="boss", superuser=True)
    client.force_login(user)
    return client


def test_upload_two_images_and_a_bad_file_shows_the_report(admin_client, project):
    url = reverse("admin:datasets_project_import_images", args=[project.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b'type="file"' in page.content and b"multiple" in page.content

    files = [
        SimpleUploadedFile("first.jpg", jpeg_bytes(seed=1), content_type="image/jpeg"),
        SimpleUploadedFile("second.png", image_bytes("PNG", seed=2), content_type="image/png"),
        SimpleUploadedFile("bad<i>name.jpg", truncated_jpeg(), content_type="image/jpeg"),
    ]
    response = admin_client.post(url, {"images": files, "license": "CC0 1.0", "attribution": "Tester"}, follow=True)
    assert response.status_code == 200
    image_import = ImageImport.objects.get(project=project)
    assert response.redirect_chain[-1][0] == reverse("admin:datasets_imageimport_change", args=[image_import.pk])
    assert (image_import.imported, image_import.failed, image_import.status) == (2, 1, ImageImport.Status.DONE)
    html = response.content.decode()
    assert "first.jpg" in html and "second.png" in html
    # The bad file's name is shown escaped, with its reason.
    assert "bad&lt;i&gt;name.jpg" in html and "bad<i>name" not in html
    assert "damaged or truncated JPEG file" in html
    assert "1 failed" in html
    assert set(Image.objects.filter(project=project).values_list("license", flat=True)) == {"CC0 1.0"}


def test_import_form_needs_exactly_one_source(admin_client, project):
    url = reverse("admin:datasets_project_import_images", args=[project.pk])
    response = admin_client.post(url, {"urls": "", "license": ""})
    assert response.status_code == 200
    assert "Give exactly one of" in response.content.decode()
    assert ImageImport.objects.count() == 0


def test_archive_upload_is_staged_and_queued_after_commit(admin_client, project, django_capture_on_commit_callbacks, monkeypatch):
    from datasets import tasks

    queued = []
    monkeypatch.setattr(tasks.image_import_run, "apply_async", lambda args=None, kwargs=None, **options: queued.append(args))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.jpg", jpeg_bytes(seed=3))
    archive = SimpleUploadedFile("photos.zip", buffer.getvalue(), content_type="application/zip")
    url = reverse("admin:datasets_project_import_images", args=[project.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"archive": archive})
    image_import = ImageImport.objects.get(project=project)
    assert response.status_code == 302
    assert image_import.status == ImageImport.Status.PENDING
    assert image_import.source == ImageImport.Source.ARCHIVE
    assert queued == [(image_import.pk,)]
    # What the worker would do, run here: the staged archive is imported and then removed.
    from django.core.files.storage import default_storage

    from datasets.services.ingest import image_import_run_staged

    image_import_run_staged(image_import=image_import)
    image_import.refresh_from_db()
    assert (image_import.status, image_import.imported) == (ImageImport.Status.DONE, 1)
    assert not default_storage.exists(f"imports/{image_import.pk}/manifest.json")
    # Delivered twice: nothing more happens.
    image_import_run_staged(image_import=image_import)
    assert Image.objects.filter(project=project).count() == 1


def test_project_list_shows_counts_and_the_coco_action_adds_80(admin_client):
    project = ProjectFactory(name="Birds")
    CategoryFactory(project=project, coco_id=500, name="robin", supercategory="bird")
    ImageFactory(project=project)
    ImageFactory(project=project)
    changelist = reverse("admin:datasets_project_changelist")
    html = admin_client.get(changelist).content.decode()
    assert "Birds" in html and 'class="field-category_count">1<' in html and 'class="field-image_count">2<' in html
    response = admin_client.post(changelist, {"action": "add_coco_categories", "_selected_action": [project.pk]}, follow=True)
    assert "80 categories added, 0 already there" in response.content.decode()
    assert Category.objects.filter(project=project).count() == 81


def test_import_categories_from_json(admin_client, project):
    url = reverse("admin:datasets_project_import_categories", args=[project.pk])
    data = {"categories": [{"id": 1, "name": "kite", "supercategory": "sky"}, {"id": 2, "name": "cloud"}]}
    upload = SimpleUploadedFile("cats.json", json.dumps(data).encode(), content_type="application/json")
    response = admin_client.post(url, {"file": upload}, follow=True)
    assert response.status_code == 200
    assert "2 categories added, 0 already there" in response.content.decode()
    assert list(Category.objects.filter(project=project).values_list("name", flat=True)) == ["kite", "cloud"]
    clash = SimpleUploadedFile("clash.json", json.dumps([{"id": 1, "name": "balloon"}]).encode())
    response = admin_client.post(url, {"file": clash})
    assert "Category id 1 is already &#x27;kite&#x27;" in response.content.decode()
    bad = SimpleUploadedFile("bad.json", b"{not json")
    assert "bad.json: not valid JSON" in admin_client.post(url, {"file": bad}).content.decode()


def test_image_list_has_thumbnails_filters_and_search(admin_client, project):
    image = ImageFactory(project=project, width=300, height=200, original_name="kitten.png")
    ImageFactory(project=project, original_name="puppy.png")
    changelist = reverse("admin:datasets_image_changelist")
    html = admin_client.get(changelist).content.decode()
    thumb_url = reverse("admin:datasets_image_thumbnail", args=[image.pk])
    assert thumb_url in html
    assert "kitten.png" in admin_client.get(changelist, {"q": "kitten"}).content.decode()
    assert "puppy.png" not in admin_client.get(changelist, {"q": image.sha256[:12]}).content.decode()
    assert admin_client.get(changelist, {"format": "PNG", "project__id__exact": project.pk}).status_code == 200

    thumb = admin_client.get(thumb_url)
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    from PIL import Image as PILImage

    small = PILImage.open(io.BytesIO(thumb.content))
    assert max(small.size) <= 96 and small.size[0] > small.size[1]
    again = admin_client.get(thumb_url, HTTP_IF_NONE_MATCH=thumb["ETag"])
    assert again.status_code == 304
    assert admin_client.get(reverse("admin:datasets_image_change", args=[image.pk])).status_code == 200


def test_category_list_filters_by_project_and_supercategory(admin_client, project):
    CategoryFactory(project=project, name="zebra", supercategory="animal")
    CategoryFactory(project=project, name="bus", supercategory="vehicle")
    url = reverse("admin:datasets_category_changelist")
    html = admin_client.get(url, {"supercategory": "animal"}).content.decode()
    assert "zebra" in html and ">bus<" not in html
    assert "bus" in admin_client.get(url, {"q": "bus"}).content.decode()


def test_import_report_page_is_read_only(admin_client, project):
    image_import = ImageImport.objects.create(
        project=project, source=ImageImport.Source.FOLDER, status=ImageImport.Status.DONE, total=1, failed=1,
        report=[{"name": "x<script>.jpg", "status": "failed", "reason": "not an image (cannot identify image file)", "image": None}],
    )
    html = admin_client.get(reverse("admin:datasets_imageimport_change", args=[image_import.pk])).content.decode()
    assert "x&lt;script&gt;.jpg" in html and "not an image (cannot identify image file)" in html
    assert 'name="_save"' not in html
    listing = admin_client.get(reverse("admin:datasets_imageimport_changelist"), {"status__exact": "done"})
    assert listing.status_code == 200


def test_a_user_without_rights_cannot_import(client, project):
    staff = UserFactory(username="clerk", is_staff=True)
    client.force_login(staff)
    response = client.get(reverse("admin:datasets_project_import_images", args=[project.pk]))
    assert response.status_code == 403


def test_project_change_page_links_to_both_imports_and_edits_memberships(admin_client, project):
    html = admin_client.get(reverse("admin:datasets_project_change", args=[project.pk])).content.decode()
    assert reverse("admin:datasets_project_import_images", args=[project.pk]) in html
    assert reverse("admin:datasets_project_import_categories", args=[project.pk]) in html
    assert "memberships-TOTAL_FORMS" in html


def test_url_list_is_staged_queued_and_imported_by_the_worker_service(
    admin_client, project, http_server, settings, django_capture_on_commit_callbacks, monkeypatch
):
    from datasets import tasks

    settings.INGEST_ALLOW_PRIVATE_URLS = True
    http_server.routes["/a.jpg"] = (200, {}, jpeg_bytes(seed=40))
    queued = []
    monkeypatch.setattr(tasks.image_import_run, "apply_async", lambda args=None, kwargs=None, **options: queued.append(args))
    text = f"# holiday\n{http_server.url('/a.jpg')}\n{http_server.url('/missing.jpg')}\n"
    url = reverse("admin:datasets_project_import_images", args=[project.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"urls": text, "attribution": "Holiday"})
    assert response.status_code == 302
    image_import = ImageImport.objects.get(project=project)
    assert (image_import.source, image_import.source_detail, image_import.status) == (
        ImageImport.Source.URLS, "2 URL(s)", ImageImport.Status.PENDING,
    )
    assert queued == [(image_import.pk,)]
    tasks.image_import_run(image_import.pk)  # the task body, run here
    image_import.refresh_from_db()
    assert (image_import.status, image_import.imported, image_import.failed) == (ImageImport.Status.DONE, 1, 1)
    assert Image.objects.get(project=project).attribution == "Holiday"
    tasks.image_import_run(10**9)  # a row that is gone: returns quietly
