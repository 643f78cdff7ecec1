"""Two imports of the same image at the same moment end with one Image and one duplicate."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from datasets.models import Image
from datasets.services import ingest
from datasets.services.ingest import images_import
from datasets.services.ingest_sources import source_folder
from tests.datasets.conftest import jpeg_bytes
from tests.factories import ProjectFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_matrix]


def test_two_threads_importing_the_same_image_at_once(write, monkeypatch):
    project = ProjectFactory()
    write("same.jpg", jpeg_bytes(seed=1))
    # Both threads pass the duplicate check before either stores: the unique constraint decides.
    barrier = threading.Barrier(2, timeout=30)
    real_store = ingest._store

    def store_together(**kwargs):
        barrier.wait()
        return real_store(**kwargs)

    monkeypatch.setattr(ingest, "_store", store_together)
    results, errors = [], []

    def run():
        try:
            results.append(images_import(project=project, source=source_folder(write.folder)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    statuses = sorted(r.report[0]["status"] for r in results)
    assert statuses == ["duplicate", "imported"]
    image = Image.objects.get(project=project)
    assert {r.report[0]["image"] for r in results} == {image.pk}
    # The loser's stored file was deleted again: one file on disk.
    from django.core.files.storage import default_storage
    from pathlib import Path

    folder = Path(default_storage.path(f"projects/{project.pk}/images"))
    assert [p.name for p in folder.rglob("*") if p.is_file()] == [Path(image.file.name).name]
