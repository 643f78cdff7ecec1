"""Celery tasks of the datasets app: thin wrappers that re-fetch rows and call a service."""
from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from datasets.models import ImageImport
from datasets.services.ingest import image_import_run_staged


@shared_task(
    name="datasets.image_import_run",
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
)
def image_import_run(import_id: int) -> None:
    """Run an archive or URL import staged by the admin (or the API). Safe to deliver twice:
    a finished import is left alone and files already in the project are duplicates. A database
    that went away is retried with backoff and jitter; the import then runs again from the start."""
    image_import = ImageImport.objects.select_related("project").filter(pk=import_id).first()
    if image_import is None:
        return
    image_import_run_staged(image_import=image_import)
