"""Exports under faults, on real processes: a Celery worker SIGKILLed in the middle of a build,
and a disk that fills up while an export is written (a real tmpfs of a few hundred kilobytes).

What a researcher must never see: a half-written export. Files appear in the API only when the
export is done, and what a failed or abandoned build stored is deleted.
"""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from rest_framework.test import APIClient

from datasets.exports.service import (
    export_build,
    export_create,
    export_recover,
    export_storage_name,
    storage_remove_prefix,
)
from datasets.models import Export
from tests.exports.builders import build_project

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def stored_under(prefix: str) -> list[str]:
    """Every file in the default storage under ``prefix``."""
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return []
    out = [f"{prefix}/{f}" for f in files]
    for folder in folders:
        out += stored_under(f"{prefix}/{folder}")
    return out


def wait_for(predicate, *, timeout: float, what: str, worker=None, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}\n" + (worker.output()[-4000:] if worker else ""))


def api_view(client: APIClient, export: Export) -> dict:
    body = client.get(f"/api/v1/projects/{export.project_id}/exports/{export.number}/").json()
    manifest = client.get(f"/api/v1/projects/{export.project_id}/exports/{export.number}/manifest/")
    return {"status": body["status"], "files": body["files"], "manifest": manifest.status_code}


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_export_is_replaced_and_the_export_is_never_half_visible(celery_worker_factory, settings):
    built = build_project(n_images=48)
    client = APIClient()
    client.force_login(built.owner)
    # Progress (and so the lease) is written at every step; a lease of 5 s, here and in the workers.
    settings.EXPORT_LEASE_SECONDS = 5
    env = {"EXPORT_PROGRESS_SECONDS": "0", "EXPORT_LEASE_SECONDS": "5"}
    worker = celery_worker_factory(env=env, concurrency=1)
    export = export_create(project=built.project, formats=["coco", "imagefolder", "shards"], min_shards=8)

    # Kill the worker once the build has published some of its files, but not all.
    def some_published():
        export.refresh_from_db()
        if export.status != Export.Status.RUNNING or not export.storage_prefix:
            return None
        files = stored_under(export.storage_prefix)
        return files if files else None

    partial = wait_for(some_published, timeout=90, what="the build to publish its first files", worker=worker,
                       every=0.01)
    worker.kill()
    export.refresh_from_db()
    assert export.status == Export.Status.RUNNING, export.error
    killed_prefix = export.storage_prefix
    assert "manifest.json" not in {Path(p).name for p in stored_under(killed_prefix)}, "killed too late"
    assert partial
    # Half-written, and invisible: no file list, and the manifest is refused (409: not done).
    assert api_view(client, export) == {"status": "running", "files": [], "manifest": 409}

    # Within its lease the export is left alone (the worker might only be slow)...
    assert export_recover() == {"restarted": 0, "failed": 0, "cancelled": 0, "requeued": 0}
    # ...once the lease has run out, beat's recovery deletes the partial files and queues it again.
    worker2 = celery_worker_factory(env=env, concurrency=1)
    later = export.heartbeat_at + timedelta(seconds=5.5)
    assert export_recover(now=later)["restarted"] == 1
    assert stored_under(killed_prefix) == []

    wait_for(lambda: Export.objects.get(pk=export.pk).status in ("done", "failed"), timeout=120,
             what="the export to be built again", worker=worker2, every=0.2)
    export.refresh_from_db()
    assert export.status == Export.Status.DONE, export.error
    assert export.attempts == 2 and export.storage_prefix != killed_prefix
    view = api_view(client, export)
    assert view["status"] == "done" and view["manifest"] == 200
    manifest = client.get(f"/api/v1/projects/{export.project_id}/exports/{export.number}/manifest/").json()
    assert sum(manifest["splits"][s]["images"] for s in manifest["splits"]) == 48
    # Every listed file is there with its checksum, and nothing else is under the project's exports.
    for entry in export.files:
        with default_storage.open(export_storage_name(export=export, name=entry["name"]), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
    everything = stored_under(f"exports/project-{built.project.pk}")
    assert sorted(everything) == sorted(export_storage_name(export=export, name=e["name"]) for e in export.files)
    # The first build's message is still unacknowledged at the broker: delivered again, it is a no-op.
    export_build(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == Export.Status.DONE and export.attempts == 2


@pytest.mark.django_db(transaction=True)
def test_an_export_asked_for_while_the_broker_is_down_is_queued_by_beat_later(celery_worker_factory, settings):
    """The API still answers 201 (a 503 would make the client ask again and get two exports);
    the export waits, pending, until beat's recovery queues it once the broker is back."""
    from annotator.celery import app
    from tests.conftest import point_celery_at
    from tests.services import free_port

    built = build_project(n_images=4)
    client = APIClient()
    client.force_login(built.owner)
    worker = celery_worker_factory(concurrency=1)
    reachable = app.conf.broker_url
    point_celery_at(app, f"redis://127.0.0.1:{free_port()}/0", {})  # nothing listens there
    try:
        created = client.post(f"/api/v1/projects/{built.project.pk}/exports/", {"formats": ["coco"]}, format="json")
    finally:
        point_celery_at(app, reachable, {})
    assert created.status_code == 201 and created.json()["status"] == "pending", created.content
    export = Export.objects.get(project=built.project, number=created.json()["number"])
    assert export_recover()["requeued"] == 0  # it has not waited long yet
    later = export.created_at + timedelta(seconds=settings.EXPORT_LEASE_SECONDS + 1)
    assert export_recover(now=later)["requeued"] == 1
    assert export_recover(now=later)["requeued"] == 0  # once per lease, not once per beat
    wait_for(lambda: Export.objects.get(pk=export.pk).status == "done", timeout=90, what="the export",
             worker=worker, every=0.2)
    assert export_recover(now=later + timedelta(hours=1)) == {"restarted": 0, "failed": 0, "cancelled": 0,
                                                              "requeued": 0}


@pytest.mark.django_db(transaction=True)
def test_a_build_that_lost_its_lease_stops_without_touching_the_new_one():
    """A worker that was only stalled (not dead) past its lease must not publish over the restart."""
    built = build_project(n_images=6)
    export = export_create(project=built.project, queue=False, min_shards=2)
    # Build once, but take the lease away as soon as the build has claimed the row.
    from datasets.exports import service

    original = service._Progress.__init__

    def stalled(self, export, total):
        Export.objects.filter(pk=export.pk).update(storage_prefix=f"exports/project-{export.project_id}/other")
        original(self, export, total)

    service._Progress.__init__ = stalled
    try:
        export_build(export_id=export.pk)
    finally:
        service._Progress.__init__ = original
    export.refresh_from_db()
    # The row still belongs to "the other build": not failed, not done, and this build left nothing.
    assert export.status == Export.Status.RUNNING and export.files == []
    assert stored_under(f"exports/project-{built.project.pk}") == []


@pytest.mark.django_db(transaction=True)
def test_an_export_that_kills_its_worker_every_time_fails_with_a_message(settings):
    settings.EXPORT_MAX_ATTEMPTS = 2
    built = build_project(n_images=2)
    export = export_create(project=built.project, queue=False)
    now = timezone.now()
    Export.objects.filter(pk=export.pk).update(status="running", attempts=2, heartbeat_at=now,
                                               storage_prefix=f"exports/project-{built.project.pk}/export-1-x")
    assert export_recover(now=now + timedelta(seconds=settings.EXPORT_LEASE_SECONDS + 1))["failed"] == 1
    export.refresh_from_db()
    assert export.status == Export.Status.FAILED
    assert "stopped 2 times" in export.error


# --- Disk full ------------------------------------------------------------------------------


def mount_tmpfs(where: Path, size: str):
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test (needs root or CAP_SYS_ADMIN): {done.stderr}")
    return where


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of 600 KiB (tmpfs), mounted for the test and unmounted after it."""
    mount = mount_tmpfs(tmp_path / "small-disk", "600k")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def media_disk(tmp_path):
    """A real filesystem of 2 MiB (tmpfs) for the media storage."""
    mount = mount_tmpfs(tmp_path / "media-disk", "2m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def big_project(n: int):
    """Images of noise: incompressible, about 40 KB each."""
    from tests.exports.builders import add_image
    import random, io
    from PIL import Image as PILImage

    built = build_project(n_images=2)
    rng = random.Random(5)
    for i in range(n):
        img = PILImage.frombytes("RGB", (160, 120), bytes(rng.randrange(256) for _ in range(160 * 120 * 3)))
        out = io.BytesIO()
        img.save(out, "PNG")
        add_image(built.project, out.getvalue(), width=160, height=120, fmt="PNG", name=f"noise{i}")
    return built


def assert_failed_cleanly(export: Export, client: APIClient) -> None:
    assert export.status == Export.Status.FAILED
    assert export.error.startswith("The disk is full"), export.error
    assert "No space left on device" in export.error and export.files == []
    assert api_view(client, export) == {"status": "failed", "files": [], "manifest": 409}
    # Nothing under the build's own folder (the project's folder may hold files of other tests,
    # whose rolled-back projects had the same id).
    assert export.storage_prefix.startswith(f"exports/project-{export.project_id}/export-")
    assert stored_under(export.storage_prefix) == []


@pytest.mark.django_db
def test_a_full_disk_under_the_build_folder_fails_the_export_cleanly(small_disk, settings):
    settings.EXPORT_TMP_DIR = small_disk
    built = big_project(24)  # about 1 MB of images: more than the disk holds
    client = APIClient()
    client.force_login(built.owner)
    export = export_build(export_id=export_create(project=built.project, queue=False, formats=["coco", "shards"],
                                                  min_shards=1).pk)
    assert_failed_cleanly(export, client)
    assert list(small_disk.iterdir()) == []  # the private build folder is gone too
    # With room again, the next export succeeds.
    settings.EXPORT_TMP_DIR = small_disk.parent / "roomy"
    again = export_build(export_id=export_create(project=built.project, queue=False, min_shards=1).pk)
    assert again.status == Export.Status.DONE, again.error
    storage_remove_prefix(again.storage_prefix)  # media outlives the test's rolled-back rows


@pytest.fixture
def tiny_disk(tmp_path):
    """A real filesystem of 100 KiB (tmpfs): no shard of ``big_project`` fits on it."""
    mount = mount_tmpfs(tmp_path / "tiny-disk", "100k")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.django_db(transaction=True)
def test_a_full_disk_under_shard_writer_processes_fails_the_export_cleanly(tiny_disk, settings, monkeypatch):
    """Shards written by forked processes (``EXPORT_PROCESSES``): the child's ENOSPC comes back
    to the build as the same error, and nothing is published."""
    from datasets.exports import service

    chosen = []
    real = service.export_processes
    monkeypatch.setattr(service, "export_processes", lambda **kw: chosen.append(real(**kw)) or chosen[-1])
    settings.EXPORT_TMP_DIR = tiny_disk
    settings.EXPORT_PROCESSES = 2
    settings.EXPORT_SAMPLES_PER_PROCESS = 1  # two processes for these 24 images, not one
    built = big_project(24)
    client = APIClient()
    client.force_login(built.owner)
    export = export_build(export_id=export_create(project=built.project, queue=False, formats=["shards"],
                                                  min_shards=4).pk)
    assert chosen == [2]
    assert_failed_cleanly(export, client)
    assert list(tiny_disk.iterdir()) == []
    storage_remove_prefix(f"exports/project-{built.project.pk}")


@pytest.mark.django_db
def test_a_full_media_disk_while_publishing_fails_the_export_cleanly(media_disk, settings, tmp_path):
    """The build folder has room; the storage it publishes to fills up half-way through a file."""
    settings.EXPORT_TMP_DIR = tmp_path / "build"
    built = big_project(24)
    client = APIClient()
    client.force_login(built.owner)
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(media_disk), "base_url": "/media/"}}}
    # The images themselves stay readable: put them on the small disk first, leaving it nearly full.
    from datasets.models import Image

    for image in Image.objects.filter(project=built.project):
        src = Path(settings.MEDIA_ROOT) / image.file.name
        dst = media_disk / image.file.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    free = os.statvfs(media_disk).f_bavail * os.statvfs(media_disk).f_frsize
    assert 0 < free < 1_000_000, free  # less than the images: the shard cannot fit
    export = export_build(export_id=export_create(project=built.project, queue=False, formats=["shards"],
                                                  min_shards=1).pk)
    assert_failed_cleanly(export, client)
    assert f"[Errno {errno.ENOSPC}]" in export.error  # the kernel's own error, quoted


@pytest.mark.django_db
def test_recovery_deletes_a_dead_builds_files_from_s3_too(s3_storage, settings):
    """On S3 the dead build's objects are listed by prefix and deleted, then the export is built."""
    from django.core.files.base import ContentFile

    s3, bucket = s3_storage
    built = build_project(n_images=4)  # its images go to the bucket too
    export = export_create(project=built.project, queue=False, min_shards=1)
    dead = f"exports/project-{built.project.pk}/export-{export.number}-deadbuild000"
    for name in ("coco/train.json", "shards/train-000000.tar", "shards/val-000000.tar"):
        default_storage.save(f"{dead}/{name}", ContentFile(b"half"))
    beat = timezone.now()
    Export.objects.filter(pk=export.pk).update(status="running", storage_prefix=dead, heartbeat_at=beat,
                                               started_at=beat, attempts=1)
    assert export_recover(now=beat + timedelta(seconds=settings.EXPORT_LEASE_SECONDS + 1))["restarted"] == 1
    assert s3.list_objects_v2(Bucket=bucket, Prefix=dead)["KeyCount"] == 0
    export = export_build(export_id=export.pk)
    assert export.status == Export.Status.DONE and export.attempts == 2, export.error
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="exports/")["Contents"]}
    assert keys == {export_storage_name(export=export, name=f["name"]) for f in export.files}
