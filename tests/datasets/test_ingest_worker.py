"""Archive imports queued from the admin run on a real Celery worker process (Redis broker,
the test database shared)."""
from __future__ import annotations

import io
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from datasets.models import Image, ImageImport
from tests.datasets.conftest import jpeg_bytes
from tests.factories import ProjectFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services, pytest.mark.postgres_matrix]


def wait_for_import(pk: int, worker, timeout: float = 60) -> ImageImport:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image_import = ImageImport.objects.get(pk=pk)
        if image_import.status in (ImageImport.Status.DONE, ImageImport.Status.FAILED):
            return image_import
        time.sleep(0.2)
    raise AssertionError(f"import {pk} did not finish; worker log:\n{worker.output()[-3000:]}")


def test_archive_import_from_the_admin_completes_on_a_worker(celery_worker, client):
    project = ProjectFactory()
    client.force_login(UserFactory(username="boss", superuser=True))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("one.jpg", jpeg_bytes(seed=1))
        zf.writestr("two.jpg", jpeg_bytes(seed=2))
        zf.writestr("../escape.jpg", jpeg_bytes(seed=3))
    upload = SimpleUploadedFile("trip.zip", buffer.getvalue(), content_type="application/zip")
    response = client.post(reverse("admin:datasets_project_import_images", args=[project.pk]), {"archive": upload, "license": "CC0 1.0"})
    assert response.status_code == 302
    pk = ImageImport.objects.get(project=project).pk

    image_import = wait_for_import(pk, celery_worker)
    assert image_import.status == ImageImport.Status.DONE, image_import.error
    assert (image_import.imported, image_import.failed) == (2, 1)
    failed = [e for e in image_import.report if e["status"] == "failed"]
    assert failed[0]["name"] == "../escape.jpg" and "'..'" in failed[0]["reason"]
    assert set(Image.objects.filter(project=project).values_list("license", flat=True)) == {"CC0 1.0"}
    assert f"datasets.image_import_run[" in celery_worker.output()

    page = client.get(reverse("admin:datasets_imageimport_change", args=[pk])).content.decode()
    assert "one.jpg" in page and "../escape.jpg" in page and "unsafe path in the archive" in page
